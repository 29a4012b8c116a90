"""Where the tests run: this machine's CPU, or, in the device leg (`make test-device`), the ggml RPC
device named by OMNISIFT_TEST_RPC (scripts/with_rpc_server.py sets it), with the LLM offloaded.

Every model a device-leg test creates takes LLM_KW, so the same test runs on either. conftest.py
registers the server first, so the engines that sift and the audio tower make pick that device too.
"""

from __future__ import annotations

import os

RPC = os.environ.get("OMNISIFT_TEST_RPC", "")
LLM_KW = {"rpc_servers": RPC, "n_gpu_layers": -1} if RPC else {}

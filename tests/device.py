"""Where the tests run: this machine's CPU, or a ggml device with the LLM offloaded:
- the RPC leg (`make test-device`): the ggml RPC server named by OMNISIFT_TEST_RPC
  (scripts/with_rpc_server.py sets it);
- a GPU leg (scripts/gpu_check.sh): OMNISIFT_TEST_GPU=1, the machine's own first GPU (CUDA, Metal, Vulkan);
- the Vulkan target (`make test-vulkan`): OMNISIFT_TEST_VULKAN=1, the GPU leg on Vulkan0 (with
  GGML_VK_VISIBLE_DEVICES=0 also a CPU-type Vulkan device such as Mesa's lavapipe), its name checked.

Every model a device-leg test creates takes LLM_KW, so the same test runs on either. conftest.py
registers an RPC server first, so the engines that sift and the audio tower make pick that device too.
"""

from __future__ import annotations

import os

RPC = os.environ.get("OMNISIFT_TEST_RPC", "")
VULKAN = os.environ.get("OMNISIFT_TEST_VULKAN", "") not in ("", "0")
GPU = os.environ.get("OMNISIFT_TEST_GPU", "") not in ("", "0") or VULKAN
ON_DEVICE = bool(RPC) or GPU
LLM_KW = {**({"rpc_servers": RPC} if RPC else {}), **({"n_gpu_layers": -1} if ON_DEVICE else {})}

"""ggml devices beyond the ones llama.cpp finds itself: RPC servers (`rpc-server`, llama.cpp's `--rpc`).

llama-cpp-python 0.3.36's `Llama` has no `rpc_servers` argument any more (llama.cpp moved RPC into
ggml's backend registry), so a server is registered here as llama.cpp's own tools do it
(`omnisift_add_rpc_server`, cpp/devices.cpp). From then on its devices are GPU-type devices like any
other: `n_gpu_layers=-1` offloads the LLM to them, and pyomnisift's engine (towers, compression)
computes on the first of them. Needs a llama-cpp-python built with `-DGGML_RPC=on`.
"""

from __future__ import annotations

import socket
import threading
from typing import Iterable, Union

from . import omnisift_cpp as C
from ._errors import OmniSiftError

_lock = threading.Lock()
_registered: dict[str, int] = {}


def _endpoints(servers: Union[str, Iterable[str]]) -> list[str]:
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"an RPC server is a 'host:port' string, got {item!r}")
        item = item.strip()
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"RPC server {item!r} is not 'host:port'")
        out.append(item)
    if not out:
        raise ValueError("no RPC server given")
    return out


def _check_reachable(endpoint: str) -> None:
    # ggml's RPC client aborts the process when the server is not there: refuse before that.
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        raise OmniSiftError(f"RPC server {endpoint} is not reachable: {exc}") from None


def add_rpc_servers(servers: Union[str, Iterable[str]]) -> dict[str, int]:
    """Registers ggml RPC servers ("host:port", a list or a comma-separated string) as ggml devices.

    Call before creating the model: llama.cpp and pyomnisift pick their devices when a model or an
    engine is created. Registering an endpoint again is a no-op. Returns {endpoint: devices it
    provides} for the servers given. Raises OmniSiftError when llama-cpp-python was built without
    RPC or a server does not answer, ValueError for an endpoint that is not host:port.
    """
    out = {}
    with _lock:
        for endpoint in _endpoints(servers):
            if endpoint not in _registered:
                _check_reachable(endpoint)
                n = C.omnisift_add_rpc_server(endpoint.encode())
                C.check(min(n, 0), f"RPC server {endpoint}")
                _registered[endpoint] = n
            out[endpoint] = _registered[endpoint]
    return out

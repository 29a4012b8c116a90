"""ggml devices beyond the ones llama.cpp finds itself: RPC servers (`rpc-server`, llama.cpp's `--rpc`).

llama-cpp-python 0.3.36's `Llama` has no `rpc_servers` argument any more (llama.cpp moved RPC into
the backend registry), so a server is registered here, as llama.cpp's own tools do: the RPC backend's
`ggml_backend_rpc_add_server` makes a backend registry holding the server's devices, and
`ggml_backend_register` adds it to ggml's. From then on the devices are GPU-type devices like any
other: `llama_cpp.Llama(n_gpu_layers=-1)` offloads to them and pyomnisift's engine computes on the
first of them. Needs a llama-cpp-python built with `-DGGML_RPC=on`.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from typing import Iterable, Union

_lock = threading.Lock()
_registered: dict[str, int] = {}


@functools.lru_cache(maxsize=None)
def _ggml():
    from llama_cpp._ggml import libggml as lib

    for name, argtypes, restype in (("ggml_backend_reg_by_name", [ctypes.c_char_p], ctypes.c_void_p),
                                    ("ggml_backend_reg_get_proc_address", [ctypes.c_void_p, ctypes.c_char_p],
                                     ctypes.c_void_p),
                                    ("ggml_backend_register", [ctypes.c_void_p], None),
                                    ("ggml_backend_reg_dev_count", [ctypes.c_void_p], ctypes.c_size_t),
                                    ("ggml_backend_reg_dev_get", [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_void_p),
                                    ("ggml_backend_dev_name", [ctypes.c_void_p], ctypes.c_char_p)):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


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


def add_rpc_servers(servers: Union[str, Iterable[str]]) -> list[str]:
    """Registers ggml RPC servers ("host:port", a list or a comma-separated string) as ggml devices.

    Returns the names of the devices they provide (e.g. "RPC0[127.0.0.1:50052]"). Registering the
    same endpoint again is a no-op. Call before creating the model: llama.cpp and pyomnisift pick
    their devices when a model or engine is created. Raises RuntimeError when llama-cpp-python was
    built without RPC, or when the server does not answer.
    """
    names = []
    with _lock:
        for endpoint in _endpoints(servers):
            if endpoint not in _registered:
                ggml = _ggml()
                rpc = ggml.ggml_backend_reg_by_name(b"RPC")
                if not rpc:
                    raise RuntimeError("llama-cpp-python was built without ggml's RPC backend: rebuild it with "
                                       "CMAKE_ARGS=-DGGML_RPC=on (see the README, 'GPU and other devices')")
                addr = ggml.ggml_backend_reg_get_proc_address(rpc, b"ggml_backend_rpc_add_server")
                if not addr:
                    raise RuntimeError("this ggml RPC backend has no ggml_backend_rpc_add_server")
                _check_reachable(endpoint)
                reg = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(addr)(endpoint.encode())
                if not reg:
                    raise RuntimeError(f"RPC server {endpoint}: ggml could not connect to it")
                ggml.ggml_backend_register(reg)
                _registered[endpoint] = reg
            reg = _registered[endpoint]
            ggml = _ggml()
            names += [ggml.ggml_backend_dev_name(ggml.ggml_backend_reg_dev_get(reg, i)).decode()
                      for i in range(ggml.ggml_backend_reg_dev_count(reg))]
    return names


def _check_reachable(endpoint: str) -> None:
    # ggml's RPC client aborts the process when the server is not there: refuse before that.
    import socket

    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        raise RuntimeError(f"RPC server {endpoint} is not reachable: {exc}") from None

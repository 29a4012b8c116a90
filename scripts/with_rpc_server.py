"""Runs a command next to a ggml RPC server on 127.0.0.1 (the device leg of `make test`).

    python scripts/with_rpc_server.py [--threads N] -- COMMAND ...

Starts a server (this script again, with --serve) on a free port of 127.0.0.1, waits until it
accepts connections, runs COMMAND with OMNISIFT_TEST_RPC=127.0.0.1:PORT in its environment, stops
the server and exits with COMMAND's status. The server is ggml's own (`ggml_backend_rpc_start_server`
from the libggml-rpc that llama-cpp-python built with -DGGML_RPC=on, what llama.cpp's `rpc-server`
tool runs) serving this machine's CPU device; it takes one client at a time, so COMMAND's tests
run in one process. It computes on the CPU: its timings are not GPU timings.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time


def serve(endpoint: str, threads: int) -> None:
    import llama_cpp  # noqa: F401  (loads ggml from llama_cpp/lib)
    from llama_cpp._ggml import libggml as ggml

    ggml.ggml_backend_dev_by_type.argtypes, ggml.ggml_backend_dev_by_type.restype = [ctypes.c_int], ctypes.c_void_p
    ggml.ggml_backend_reg_by_name.argtypes, ggml.ggml_backend_reg_by_name.restype = [ctypes.c_char_p], ctypes.c_void_p
    proc = ggml.ggml_backend_reg_get_proc_address
    proc.argtypes, proc.restype = [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_void_p
    rpc = ggml.ggml_backend_reg_by_name(b"RPC")
    if not rpc:
        sys.exit("llama-cpp-python was built without -DGGML_RPC=on")
    start = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                             ctypes.POINTER(ctypes.c_void_p))(proc(rpc, b"ggml_backend_rpc_start_server"))
    devices = (ctypes.c_void_p * 1)(ggml.ggml_backend_dev_by_type(0))   # GGML_BACKEND_DEVICE_TYPE_CPU
    start(endpoint.encode(), None, threads, 1, devices)   # serves until killed
    sys.exit("the RPC server stopped")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the RPC server exited with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"the RPC server did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", metavar="HOST:PORT", help="run the server itself (internal)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the server (default 2)")
    ap.add_argument("command", nargs="*")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.threads)
    if not args.command:
        ap.error("give a command after --")
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", endpoint,
                               "--threads", str(args.threads)], stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        print(f"ggml RPC server on {endpoint} (pid {server.pid})", flush=True)
        return subprocess.call(args.command, env={**os.environ, "OMNISIFT_TEST_RPC": endpoint})
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())

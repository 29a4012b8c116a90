"""Engine: the ggml device (GPU if there is one, else CPU) that pyomnisift's graphs run on."""

from __future__ import annotations

import threading
from typing import Optional

from . import omnisift_cpp as C
from ._internals import Handle


class Engine(Handle):
    """Owns an ``omnisift_engine``. Not thread-safe: use one per thread (``default_engine()`` does)."""

    _free = C.omnisift_engine_free

    def __init__(self, n_threads: Optional[int] = None, device: Optional[str] = None):
        params = C.omnisift_engine_default_params()
        params.n_threads = int(n_threads or 0)
        params.device = device.encode() if device else None
        self._ptr = C.check_ptr(C.omnisift_engine_init(params), f"engine on device {device or 'auto'}")

    @property
    def device(self) -> str:
        return C.omnisift_engine_device(self.ptr).decode()

    def stats(self) -> dict:
        """Placement and transfer counts of this engine's graphs (omnisift_engine_stats, cpp/omnisift.h)."""
        st = C.omnisift_engine_get_stats(self.ptr)
        return {name: getattr(st, name) for name, _ in C.omnisift_engine_stats._fields_}

    def reset_stats(self) -> None:
        C.omnisift_engine_reset_stats(self.ptr)


_local = threading.local()


def default_engine() -> Engine:
    """The calling thread's shared engine, created on first use."""
    engine = getattr(_local, "engine", None)
    if engine is None:
        engine = _local.engine = Engine()
    return engine

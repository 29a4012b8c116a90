"""The base class of every Python owner of a C handle (the engine, the sift head, the audio tower,
the prefill queue, the mtmd context), as llama-cpp-python's _internals owns its model and context:
the handle is freed exactly once, by close(), by leaving a ``with`` block, or when the owner is
collected, and a closed owner refuses to be used instead of passing a dangling pointer to C."""

from __future__ import annotations

from typing import Callable, ClassVar


class Handle:
    """Owns ``_ptr``, released by the subclass's ``_free`` (a C function taking the pointer)."""

    _free: ClassVar[Callable[[int], None]]
    _ptr = None   # also what close() sees when a constructor failed before it took a handle

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._ptr

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr:
            type(self)._free(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

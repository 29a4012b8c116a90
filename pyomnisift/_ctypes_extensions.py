"""Locating and loading libomnisift, the way llama-cpp-python loads libllama.

The library is found in ``pyomnisift/lib`` next to this file, or in the directory named by the
environment variable ``OMNISIFT_LIB_PATH`` (for a library built elsewhere, e.g. a sanitizer build).
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import sys
from typing import Callable, Sequence


def _library_file_names(base_name: str) -> list[str]:
    if sys.platform.startswith(("linux", "freebsd")):
        return [f"lib{base_name}.so"]
    if sys.platform == "darwin":
        return [f"lib{base_name}.dylib", f"lib{base_name}.so"]
    if sys.platform == "win32":
        return [f"{base_name}.dll", f"lib{base_name}.dll"]
    raise RuntimeError(f"pyomnisift: unsupported platform {sys.platform!r}")


def library_search_dirs(default_dir: pathlib.Path) -> list[pathlib.Path]:
    override = os.environ.get("OMNISIFT_LIB_PATH")
    return [pathlib.Path(override)] if override else [default_dir]


def load_shared_library(base_name: str, default_dir: pathlib.Path) -> ctypes.CDLL:
    """Loads ``lib<base_name>`` from the search directories; raises RuntimeError naming the file."""
    dirs = library_search_dirs(default_dir)
    tried = []
    for directory in dirs:
        for name in _library_file_names(base_name):
            path = directory / name
            tried.append(str(path))
            if not path.exists():
                continue
            try:
                return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL if sys.platform != "win32" else 0)
            except OSError as e:
                raise RuntimeError(f"pyomnisift: failed to load shared library '{path}': {e}") from e
    hint = (" (OMNISIFT_LIB_PATH is set: does it point at a directory holding the library?)"
            if os.environ.get("OMNISIFT_LIB_PATH") else
            " (is pyomnisift installed with `pip install .`, not imported from the source tree?)")
    raise RuntimeError(f"pyomnisift: shared library not found; tried {', '.join(tried)}{hint}")


def ctypes_function(lib: ctypes.CDLL, name: str, argtypes: Sequence, restype) -> Callable:
    """Declares a C function's signature once; used as a decorator over a Python stub."""

    def decorator(stub: Callable) -> Callable:
        fn = getattr(lib, name)
        fn.argtypes = list(argtypes)
        fn.restype = restype
        fn.__doc__ = stub.__doc__
        fn.__name__ = name
        return fn

    return decorator

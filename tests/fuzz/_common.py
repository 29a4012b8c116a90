"""What every harness shares: the property and the atheris entry point.

The property: any input gives a result or one of the documented exceptions; anything else (another
exception type, a crash, an abort from GGML_ASSERT) is a finding. atheris reports an uncaught
exception or a deadly signal, writes the input as crash-<sha1> and exits non-zero; run_all.py runs
each harness in a child process so that a crash ends only that child.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

import atheris  # noqa: E402

with atheris.instrument_imports(include=["pyomnisift"]):   # coverage feedback from our Python code
    import pyomnisift  # noqa: F401,E402

# The documented kinds: pyomnisift.ModelFileError and OmniSiftError, ValueError (pydantic's
# ValidationError and json's JSONDecodeError are ValueErrors), TypeError, FileNotFoundError.
EXPECTED = (ValueError, TypeError, FileNotFoundError, pyomnisift.OmniSiftError)


def expect(fn, *args, **kwargs):
    """fn's result, or None when it raised a documented exception; anything else propagates."""
    try:
        return fn(*args, **kwargs)
    except EXPECTED:
        return None


def cache_dir() -> Path:
    d = Path(os.environ.get("OMNISIFT_FUZZ_CACHE", HERE.parent.parent / "build" / "fuzz-cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def main(test_one, seeds=()) -> None:
    """atheris over test_one(bytes). Seeds (bytes) go into the first corpus directory given when it
    is empty, so a run is reproducible from `-seed=N` and those seeds."""
    corpora = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpora:
        first = Path(corpora[0])
        first.mkdir(parents=True, exist_ok=True)
        if not any(first.iterdir()):
            for i, data in enumerate(seeds() if callable(seeds) else seeds):
                (first / f"seed-{i:03d}").write_bytes(data)
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


def tiny_model() -> tuple[Path, Path]:
    """(llm, mmproj) of the tiny random pair, as tests/conftest.py's `tiny_model` fixture makes it
    (the same cache and generator stamp, so a test session and a fuzz run share one copy)."""
    from pyomnisift.assets import default_cache_dir, ensure_assets, sha256_of
    from pyomnisift import tiny_model as make_tiny_model

    out = default_cache_dir() / "tiny-model-0"
    llm, mmproj = out / make_tiny_model.LLM_FILE, out / make_tiny_model.MMPROJ_FILE
    stamp, generator = out / "generator.sha256", sha256_of(Path(make_tiny_model.__file__))
    if not (llm.is_file() and mmproj.is_file() and stamp.is_file() and stamp.read_text() == generator):
        make_tiny_model.make_tiny_model(out, 0, ensure_assets()["ggml-vocab-qwen2.gguf"])
        stamp.write_text(generator)
    return llm, mmproj

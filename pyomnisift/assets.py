"""Fetch the test assets that ship inside the llama-cpp-python sdist.

The pinned sdist carries a real Qwen2 vocabulary and llama.cpp's multimodal test
media (an image, a speech clip, a video with an audio track). PyPI is the only
registry reachable from the build machines, so the sdist is the one source for
them. Every byte is pinned by sha256.

Usage: python -m pyomnisift.assets [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
from pathlib import Path

# The pinned sdist and how it is fetched are the package's (its converter comes from the same file).
from ._converter import (MEMBER_PREFIX as _MEMBER_PREFIX, default_cache_dir,  # noqa: E402,F401
                                   download_sdist as _download_sdist, sha256_of)

# asset name -> (path inside the llama.cpp tree, sha256)
ASSETS = {
    "ggml-vocab-qwen2.gguf": (
        "models/ggml-vocab-qwen2.gguf",
        "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c",
    ),
    # 640x488 photo of a newspaper front page
    "test-1.jpeg": (
        "tools/mtmd/test-1.jpeg",
        "2dff664c0c8aaea18aff8cbe7e868845b775e90cdd7a0bac98df709b131deaa3",
    ),
    # 17.5 s of speech
    "test-2.mp3": (
        "tools/mtmd/test-2.mp3",
        "cdeac0ded280e18b99afbb7fac86130e4dda4b7d0b252cc22aa3d20679270a1e",
    ),
    # 10 s, 720x358, H.264 video + AAC stereo audio track
    "test-3.mp4": (
        "tools/mtmd/test-3.mp4",
        "95a9776a0e7f8d6ab1ba67a31dbb09a4c04ffda3c853fd933624e3496fa970a5",
    ),
}


class ChecksumError(RuntimeError):
    pass


def _has_sha256(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_of(path) == expected


def _check(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"{what}: sha256 mismatch for {path}\n  expected {expected}\n  got      {actual}"
        )


def _extract(sdist: Path, wanted: dict[str, Path]) -> None:
    members = {_MEMBER_PREFIX + ASSETS[name][0]: name for name in wanted}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if not members:
                break
            name = members.pop(member.name, None)
            if name is None:
                continue
            dest = wanted[name]
            src = tar.extractfile(member)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".")
            try:
                with os.fdopen(fd, "wb") as out:
                    while block := src.read(1 << 20):
                        out.write(block)
                _check(Path(tmp), ASSETS[name][1], name)
                os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    if members:
        raise RuntimeError(f"{sdist} lacks {sorted(members.values())}")


def ensure_assets(cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Return {asset name: path}, downloading and extracting only what is missing."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    assets_dir = cache / "assets"
    paths = {name: assets_dir / name for name in ASSETS}
    stale = {name: path for name, path in paths.items()
             if not _has_sha256(path, ASSETS[name][1])}
    if stale:
        assets_dir.mkdir(parents=True, exist_ok=True)
        _extract(_download_sdist(cache / "sdist"), stale)
    return paths


def ensure_converter(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the path of llama.cpp's convert_hf_to_gguf.py from the pinned sdist, extracting it
    (with conversion/ and gguf-py/ next to it) on first use: pyomnisift's own (pyomnisift convert)."""
    from pyomnisift._converter import ensure_converter as _ensure

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _ensure(cache, sdist=None if (cache / "converter" / "convert_hf_to_gguf.py").is_file()
                   else _download_sdist(cache / "sdist"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="cache directory (default: $PYOMNISIFT_CACHE "
                                         "or ~/.cache/pyomnisift)")
    args = parser.parse_args(argv)
    for name, path in ensure_assets(args.cache).items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

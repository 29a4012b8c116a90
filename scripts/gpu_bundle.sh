#!/bin/sh
# Prepares build/gpu-bundle/ (at most 64 MiB) for scripts/gpu_check.sh on a GPU machine without
# network: the pinned llama-cpp-python sdist trimmed to what a CUDA build of libllama, libggml and
# libmtmd compiles (no models, docs, tests, examples, other tools or backends: ~75 MB -> ~5 MB), the
# pinned test assets, and the wheels that such a machine (Python with torch) may lack.
#
#   scripts/gpu_bundle.sh [PYTHON]        # PYTHON: a venv with pyomnisift installed (default .venv/bin/python)
#
# Then, from the repository root on the GPU machine:  sh scripts/gpu_check.sh   (results in $OUT)
set -eu
PY=${1:-.venv/bin/python}
OUT=build/gpu-bundle
SDIST=$("$PY" -P -c 'from pyomnisift import assets as f; print(f._download_sdist(f.default_cache_dir() / "sdist"))')
ASSETS=$("$PY" -P -c 'from pyomnisift import assets as f; p = f.ensure_assets(); print(p["ggml-vocab-qwen2.gguf"].parent)')
rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/cache/assets"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
tar -xzf "$SDIST" -C "$TMP"
S="$TMP/llama_cpp_python-0.3.36"
T="$S/vendor/llama.cpp"
rm -rf "$S/.git" "$S/examples" "$S/docs" "$S/tests" "$S/docker"   # .git: a 40 MB pack of llama.cpp's history
rm -rf "$T/models" "$T/docs" "$T/tests" "$T/examples" "$T/benches" "$T/gguf-py" "$T/conversion" "$T/scripts" \
       "$T/app" "$T/media" "$T/pocs" "$T/ci" "$T/skills" "$T/requirements" "$T/grammars" "$T"/convert_*.py
find "$T/tools" -mindepth 1 -maxdepth 1 ! -name mtmd ! -name CMakeLists.txt -exec rm -rf {} +
rm -f "$T"/tools/mtmd/test-*.jpeg "$T"/tools/mtmd/test-*.mp3 "$T"/tools/mtmd/test-*.mp4
find "$T/ggml/src" -mindepth 1 -maxdepth 1 -type d -name 'ggml-*' ! -name ggml-cpu ! -name ggml-cuda -exec rm -rf {} +
tar -czf "$OUT/llama_cpp_python-0.3.36.tar.gz" -C "$TMP" llama_cpp_python-0.3.36
cp "$ASSETS"/* "$OUT/cache/assets/"
# Wheels for CPython 3.12 on x86-64 Linux: what pyomnisift and its GPU tests import beyond torch's image.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$OUT/wheels" \
    "scikit-build-core>=0.10" pathspec packaging gguf pyyaml requests diskcache tqdm "av>=12" pillow pytest pluggy iniconfig pygments idna urllib3 certifi charset-normalizer
du -sh "$OUT"
du -sh "$OUT"/* "$OUT"/wheels/* | sort -h | tail -6

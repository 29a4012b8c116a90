#!/bin/sh
# Builds llama-cpp-python 0.3.36 from its pinned sdist with extra ggml backends (CMAKE flags given as
# arguments, e.g. -DGGML_RPC=on) into a wheel cached per machine, and prints the wheel's path.
#
#   scripts/build_llama_wheel.sh PYTHON SDIST -DGGML_RPC=on
#
# Why not `CMAKE_ARGS=... pip install llama-cpp-python`: pip's wheel cache keys ignore CMAKE_ARGS,
# so it hands back whatever wheel was built first (usually the CPU-only one), and build isolation
# installs yet another llama-cpp-python. Here the wheel is built with --no-cache-dir and
# --no-build-isolation by PYTHON (a venv with scikit-build-core and ninja) and kept under
# ~/.cache/pyomnisift/wheels/<key>/, the key being the sdist's sha256, the flags and this CPU's
# features (ggml builds with -march=native): a second run with the same key reuses it.
set -eu
PY=$1
SDIST=$2
shift 2
FLAGS="$*"
SHA=$(sha256sum "$SDIST" | cut -c1-64)
CPU=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | sha256sum | cut -c1-12)
KEY=$(printf '%s|%s|%s' "$SHA" "$FLAGS" "$CPU" | sha256sum | cut -c1-16)
DIR=${XDG_CACHE_HOME:-$HOME/.cache}/pyomnisift/wheels/llama-cpp-python-0.3.36-$KEY
if ! ls "$DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    mkdir -p "$DIR.tmp"
    printf 'sdist %s\nflags %s\ncpu %s\n' "$SHA" "$FLAGS" "$CPU" > "$DIR.tmp/KEY"
    echo "building llama-cpp-python 0.3.36 with $FLAGS (about 10 minutes on 2 cores) into $DIR" >&2
    CMAKE_ARGS="$FLAGS" "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir -w "$DIR.tmp" "$SDIST" >&2
    rm -rf "$DIR"
    mv "$DIR.tmp" "$DIR"
fi
ls "$DIR"/llama_cpp_python-*.whl

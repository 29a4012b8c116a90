#!/bin/sh
# Builds llama-cpp-python 0.3.36 from its pinned sdist with extra ggml backends (CMAKE flags given as
# arguments, e.g. -DGGML_RPC=on) into a wheel cached per machine, and prints the wheel's path.
#
#   scripts/build_llama_wheel.sh PYTHON SDIST -DGGML_RPC=on
#   LLAMA_PATCH=scripts/patches/ggml-vulkan-layer-settings-guard.patch LLAMA_SRC_DIR=build/vulkan/src \
#       scripts/build_llama_wheel.sh PYTHON SDIST -DGGML_VULKAN=on
#
# Why not `CMAKE_ARGS=... pip install llama-cpp-python`: pip's wheel cache keys ignore CMAKE_ARGS,
# so it hands back whatever wheel was built first (usually the CPU-only one), and build isolation
# installs yet another llama-cpp-python. Here the wheel is built with --no-cache-dir and
# --no-build-isolation by PYTHON (a venv with scikit-build-core and ninja) and kept under
# ~/.cache/pyomnisift/wheels/<key>/, the key being the sdist's sha256, the flags, the patch's sha256
# and this CPU's features (ggml builds with -march=native): a second run with the same key reuses it.
#
# LLAMA_PATCH (optional): a patch (-p1, paths as in the sdist) applied to the unpacked sdist before
# the build; the sdist is unpacked into LLAMA_SRC_DIR (default: a directory next to the wheel, removed
# afterwards). SKBUILD_BUILD_DIR, if set, keeps CMake's build tree there (scikit-build-core reads it).
set -eu
PY=$1
SDIST=$2
shift 2
FLAGS="$*"
PATCH=${LLAMA_PATCH:-}
SHA=$(sha256sum "$SDIST" | cut -c1-64)
PSHA=$( [ -z "$PATCH" ] || sha256sum "$PATCH" | cut -c1-64)
CPU=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | sha256sum | cut -c1-12)
if [ -z "$PATCH" ]; then
    KEY=$(printf '%s|%s|%s' "$SHA" "$FLAGS" "$CPU" | sha256sum | cut -c1-16)   # as before patches existed
else
    KEY=$(printf '%s|%s|%s|%s' "$SHA" "$FLAGS" "$CPU" "$PSHA" | sha256sum | cut -c1-16)
fi
DIR=${XDG_CACHE_HOME:-$HOME/.cache}/pyomnisift/wheels/llama-cpp-python-0.3.36-$KEY
if ! ls "$DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    rm -rf "$DIR.tmp"
    mkdir -p "$DIR.tmp"
    printf 'sdist %s\nflags %s\ncpu %s\npatch %s %s\n' "$SHA" "$FLAGS" "$CPU" "$PATCH" "$PSHA" > "$DIR.tmp/KEY"
    SRC=$SDIST
    if [ -n "$PATCH" ]; then
        UNPACK=${LLAMA_SRC_DIR:-$DIR.tmp/src}
        rm -rf "$UNPACK"
        mkdir -p "$UNPACK"
        tar -xzf "$SDIST" -C "$UNPACK" --strip-components=1
        patch -s -p1 -d "$UNPACK" < "$PATCH"
        SRC=$(cd "$UNPACK" && pwd)
    fi
    echo "building llama-cpp-python 0.3.36 with $FLAGS ${PATCH:+(patched: $PATCH) }(10-25 minutes on 2 cores) into $DIR" >&2
    CMAKE_ARGS="$FLAGS" "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir -w "$DIR.tmp" "$SRC" >&2
    rm -rf "$DIR.tmp/src"
    rm -rf "$DIR"
    mv "$DIR.tmp" "$DIR"
fi
ls "$DIR"/llama_cpp_python-*.whl

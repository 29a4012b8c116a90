#!/bin/sh
# The GPU check, one command on a CUDA machine (16 cores, nvcc, cmake, ninja, Python 3.12 with torch,
# no network), in at most ~9 minutes, from the repository root:
#
#   scripts/gpu_bundle.sh          # here, with network: build/gpu-bundle/ (<= 64 MiB, carried along)
#   sh scripts/gpu_check.sh        # there; results in $OUT (default build/gpu-results)
#
# 1. a venv over the image's site packages (torch, numpy, jinja2) plus the bundle's wheels;
# 2. llama-cpp-python 0.3.36 from the trimmed sdist, CUDA for this GPU's architecture only
#    (nvidia-smi's compute capability), 16 jobs, no wheel cache, no build isolation: a real GPU build;
# 3. pyomnisift built against it;
# 4. the GPU leg of the tests (tests/device.py: OMNISIFT_TEST_GPU=1; every model with the LLM offloaded,
#    engines on CUDA0, the placement guard of conftest.py and tests/test_device_leg.py);
# 5. scripts/bench_transfers.py, then the 3B-geometry benchmark (A vs 35% vs 25%, TTFT by stage) with
#    n_gpu_layers=-1 while nvidia-smi samples the GPU's memory (peak VRAM) - as far as the time allows.
# Every step is timed in $OUT/steps.log; each one's output is in $OUT/<step>.log.
set -u
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-530}
OUT=${OUT:-build/gpu-results}
B=build/gpu-bundle
PY=${PYTHON:-python3.12}
VENV=build/venv-gpu
mkdir -p "$OUT"
export PYOMNISIFT_CACHE="$PWD/build/gpu-cache"
mkdir -p "$PYOMNISIFT_CACHE"
cp -r "$B/cache/assets" "$PYOMNISIFT_CACHE/"

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/steps.log"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
step() {   # step NAME TIMEOUT_S COMMAND...: runs it, logs rc and seconds
    name=$1; limit=$2; shift 2
    t0=$(date +%s)
    log "start $name (limit ${limit} s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    log "end $name rc=$rc $(( $(date +%s) - t0 )) s"
    return $rc
}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
log "GPU compute capability $ARCH; $(nproc) cores; $(nvcc --version | tail -1)"

step venv 120 sh -c "$PY -m venv --system-site-packages $VENV &&
    $VENV/bin/pip install -q --no-index --find-links $B/wheels 'scikit-build-core>=0.10' gguf diskcache tqdm av pillow pytest" || exit 1

# A toolkit assembled from pip wheels lacks CUDA::cublas / CUDA::cuda_driver: point CMake at them then
# (CUDA_CUBLAS_LIB=..., CUDA_CUBLAS_INC=...); a system CUDA toolkit needs nothing more.
EXTRA=""
[ -n "${CUDA_CUBLAS_LIB:-}" ] && EXTRA="-DCUDA_cublas_LIBRARY=$CUDA_CUBLAS_LIB -DGGML_CUDA_NO_VMM=ON"
[ -n "${CUDA_CUBLAS_INC:-}" ] && EXTRA="$EXTRA -DCMAKE_CUDA_FLAGS=-I$CUDA_CUBLAS_INC"
step llama-cpp-python-cuda 360 env CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${ARCH}-real -DGGML_CUDA_FA=OFF $EXTRA" \
    $VENV/bin/pip install -v --no-index --no-build-isolation --no-cache-dir --no-deps \
    "$B/llama_cpp_python-0.3.36.tar.gz" || exit 1
ls "$VENV"/lib/python*/site-packages/llama_cpp/lib/ > "$OUT/llama_cpp_lib.txt"
grep -q ggml-cuda "$OUT/llama_cpp_lib.txt" || { log "no libggml-cuda: not a GPU build"; exit 1; }

step pyomnisift 120 $VENV/bin/pip install -q --no-index --no-build-isolation --no-deps \
    --config-settings=build-dir=build/gpu . || exit 1

TESTS="test_device_leg.py test_sift.py test_context.py test_pipeline.py test_chat_api.py test_audio_stream.py test_bad_inputs.py"
$VENV/bin/python -c "import transformers, safetensors" 2>/dev/null && TESTS="$TESTS test_sift_head.py test_audio_tower.py"
step gpu-tests "$(( $(left) > 200 ? 200 : $(left) ))" sh -c "cd tests && OMNISIFT_TEST_GPU=1 ../$VENV/bin/python -m pytest \
    -q -rs -p no:cacheprovider --junitxml=../$OUT/gpu-tests.xml $TESTS"

step bench-transfers 60 $VENV/bin/python scripts/bench_transfers.py

if [ "$(left)" -gt 60 ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/vram-mib.csv" 2>/dev/null &
    SMI=$!
    step bench-3b "$(left)" $VENV/bin/python scripts/bench.py --model 3b --clips 10s_448 --configs A 35 25 --reps 1 \
        --n-gpu-layers -1 --threads "$(nproc)" --tokenizer "$PYOMNISIFT_CACHE/assets/ggml-vocab-qwen2.gguf" --out "$OUT"
    kill "$SMI" 2>/dev/null
    log "peak VRAM used during bench-3b: $(sort -n "$OUT/vram-mib.csv" | tail -1) MiB (whole GPU, nvidia-smi)"
fi
log "total $(( $(date +%s) - START )) s"

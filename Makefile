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
# The [server] extra (pyomnisift serve) and what the tests drive it with; tqdm for progress bars.
SERVER_DEPS := fastapi uvicorn sse-starlette pydantic-settings
TEST_DEPS   := pytest hypothesis openai httpx
# The fuzzer (tests/fuzz/): atheris, a manylinux wheel for CPython 3.11 with libFuzzer built in.
FUZZ_DEPS   := atheris

.PHONY: setup install demo test test-python test-cpp fuzz clean

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
# tools/ (development-only model and media generators, not part of the package) goes on the venv's
# path through a .pth file, so that tests, bench/ and `pyomnisift demo` import them by name.
install: $(VENV)/.deps
	$(PIP) install -q --no-build-isolation --no-deps .
	echo "$(abspath tools)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pyomnisift-dev-tools.pth"

demo: install
	$(VENV)/bin/pyomnisift demo

test: test-python test-cpp fuzz

test-python: install $(VENV)/.parity
	cd tests && ../$(VENV)/bin/pytest -q -rs -p no:cacheprovider .

# Bounded fuzzing (about 1.5 minutes, at most ~2.5): each harness in its own child process, fixed seed, a fixed
# number of executions; a crash or an undocumented exception fails the step. Longer, by hand:
#   .venv/bin/python tests/fuzz/run_all.py --seconds 1800 --runs 0 --corpus fuzz-corpus
fuzz: install $(VENV)/.fuzz
	$(PY) tests/fuzz/run_all.py

# The C++ tests, built with AddressSanitizer + UBSan against the same llama.cpp libraries; the
# decode test runs on the tiny model (generated in about a second).
test-cpp: install
	cmake -S . -B build/asan -G Ninja -DPython_EXECUTABLE=$(abspath $(PY)) \
	      -DCMAKE_BUILD_TYPE=Debug -DOMNISIFT_BUILD_TESTS=ON -DOMNISIFT_SANITIZE=ON
	cmake --build build/asan -j2
	$(PY) tools/make_tiny_model.py --out build/tiny-model
	OMNISIFT_TINY_LLM=$(abspath build/tiny-model/omni-tiny-llm.gguf) ctest --test-dir build/asan --output-on-failure

clean:
	rm -rf build $(VENV)

"""libomnisift builds against llama-cpp-python, loads next to it as one runtime, and reports
problems with the library or the model files as Python exceptions that name the file."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyomnisift
from pyomnisift import ModelFileError, OmniSiftError


def run_python(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_versions():
    assert pyomnisift.library_version() == pyomnisift.__version__
    assert pyomnisift.llama_cpp_python_version() == importlib.metadata.version("llama-cpp-python") == "0.3.36"


def test_engine_runs_on_a_registered_device():
    with pyomnisift.Engine(n_threads=1) as engine:
        assert engine.device  # "CPU" here; a GPU name on a CUDA/Metal build
    with pytest.raises(ValueError, match="closed"):
        engine.device
    # One ggml backend registry (the device list our library sees is llama-cpp-python's) is
    # checked where it can fail: one copy of each library mapped, from llama_cpp/lib
    # (test_one_llama_cpp_runtime_whatever_the_import_order, below).


def test_unknown_device_is_an_error_listing_devices():
    with pytest.raises(OmniSiftError, match=r"NoSuchGPU.*available: .*CPU"):
        pyomnisift.Engine(device="NoSuchGPU")


LOADED_LIBS = """
    import collections, json, os
    libs = collections.defaultdict(set)
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        name = os.path.basename(path)
        for stem in ("libllama", "libmtmd", "libggml-base", "libggml-cpu", "libggml.", "libomnisift"):
            if name.startswith(stem):
                libs[stem].add(os.path.realpath(path))
    print(json.dumps({k: sorted(v) for k, v in libs.items()}))
"""


@pytest.mark.parametrize("imports", [
    "import llama_cpp, llama_cpp.mtmd_cpp\nimport pyomnisift",
    "import pyomnisift\nimport llama_cpp, llama_cpp.mtmd_cpp",
    "import pyomnisift",
])
def test_one_llama_cpp_runtime_whatever_the_import_order(imports):
    import json

    proc = run_python(imports + "\npyomnisift.default_engine()\n" + textwrap.dedent(LOADED_LIBS))
    assert proc.returncode == 0, proc.stderr
    libs = json.loads(proc.stdout.strip().splitlines()[-1])
    for stem in ("libllama", "libmtmd", "libggml-base", "libggml.", "libomnisift"):
        assert len(libs.get(stem, [])) == 1, f"{stem}: {libs.get(stem)}"
    llama_lib_dir = os.path.dirname(libs["libllama"][0])
    assert llama_lib_dir.endswith(os.path.join("llama_cpp", "lib"))
    for stem in ("libmtmd", "libggml-base", "libggml."):
        assert os.path.dirname(libs[stem][0]) == llama_lib_dir


def test_library_not_found_names_the_paths_tried(tmp_path):
    proc = run_python("import pyomnisift", {"OMNISIFT_LIB_PATH": str(tmp_path)})
    assert proc.returncode != 0
    assert "RuntimeError" in proc.stderr and str(tmp_path / "libomnisift.so") in proc.stderr


def test_broken_library_is_a_clear_error(tmp_path):
    (tmp_path / "libomnisift.so").write_bytes(b"\x7fELF this is not a shared library")
    proc = run_python("import pyomnisift", {"OMNISIFT_LIB_PATH": str(tmp_path)})
    assert proc.returncode != 0
    assert "failed to load shared library" in proc.stderr
    assert str(tmp_path / "libomnisift.so") in proc.stderr
    assert "Segmentation fault" not in proc.stderr and proc.returncode == 1


# --- model files


def write_gguf(path, arch: str, kv: dict):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    for key, value in kv.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_missing_model_path_names_the_file(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        pyomnisift.read_llm_info(missing)


def test_non_gguf_file_names_the_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ModelFileError, match=r"model.gguf.*not a GGUF file"):
        pyomnisift.read_llm_info(bad)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00\x05")
    with pytest.raises(ModelFileError, match="truncated.gguf"):
        pyomnisift.read_llm_info(truncated)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ModelFileError, match="directory"):
        pyomnisift.read_mmproj_info(tmp_path)


def test_swapped_model_and_mmproj(tiny_model):
    llm, mmproj = tiny_model
    with pytest.raises(ModelFileError, match=r"mmproj.*pass it as mmproj_path"):
        pyomnisift.check_pair(mmproj, llm)


def test_tiny_pair_is_consistent(tiny_model):
    llm, mmproj = tiny_model
    info, mm = pyomnisift.check_pair(llm, mmproj)
    assert info.architecture == "qwen2vl" and info.uses_mrope
    assert len(info.rope_sections) == 4
    assert mm.projector_type == "qwen2.5o" and mm.has_vision and mm.has_audio
    assert mm.vision_projection_dim == mm.audio_projection_dim == info.n_embd


def test_mmproj_of_another_width_is_rejected(tiny_model, tmp_path):
    llm, _ = tiny_model
    other = write_gguf(tmp_path / "other-mmproj.gguf", "clip", {
        "clip.projector_type": "qwen2.5o", "clip.has_vision_encoder": True,
        "clip.has_audio_encoder": False, "clip.vision.projection_dim": 896,
    })
    with pytest.raises(ModelFileError) as e:
        pyomnisift.check_pair(llm, other)
    msg = str(e.value)
    assert "other-mmproj.gguf" in msg and "896" in msg and "64" in msg


def test_metadata_reader_matches_gguf_py(tiny_model):
    """Our GGUF key/value reader (60x faster than gguf.GGUFReader on a Qwen vocabulary) against
    gguf-py's own reader, every key of both files."""
    import gguf

    from pyomnisift._gguf import read_metadata

    for path in tiny_model:
        ours = read_metadata(path)
        reader = gguf.GGUFReader(str(path))
        theirs = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
                np.testing.assert_allclose(ours[key], value, rtol=1e-7, err_msg=key)
            else:
                assert ours[key] == value, key
        skipped = read_metadata(path, keep=lambda k: not k.startswith("tokenizer."))
        assert skipped == {k: v for k, v in ours.items() if not k.startswith("tokenizer.")}


def test_tensor_info_reader_matches_gguf_py(tiny_model):
    """Tensor names, ggml shapes (ne0 first) and types, against gguf-py's reader."""
    import gguf

    from pyomnisift._gguf import read_tensor_infos

    for path in tiny_model:
        theirs = [(t.name, tuple(int(n) for n in t.shape), int(t.tensor_type)) for t in gguf.GGUFReader(str(path)).tensors]
        assert read_tensor_infos(path) == theirs and len(theirs) > 10

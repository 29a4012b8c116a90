"""One audio tower in memory: libmtmd is given the mmproj without its audio tower (C:
omnisift_mmproj_write_vision_only) when pyomnisift's own tower encodes the audio. The copy holds
every other key and tensor byte for byte, libmtmd loads it as vision-only, and it encodes exactly
what the whole mmproj encodes. Its sibling omnisift_mmproj_write_audio_only gives Qwen3-Omni's audio
tower to libmtmd, which refuses that mmproj whole (its towers' rows differ in width)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader

from pyomnisift import omnisift_cpp as C
from pyomnisift.media import decode
from pyomnisift._mtmd import MtmdEncoder, audio_only, vision_only


def test_copy_drops_the_audio_tower_only(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PYOMNISIFT_CACHE", str(tmp_path))
    _, mmproj = tiny_model
    path = vision_only(mmproj)
    assert vision_only(mmproj) == path   # written once
    src, dst = GGUFReader(str(mmproj)), GGUFReader(path)
    src_t = {t.name: t for t in src.tensors}
    dst_t = {t.name: t for t in dst.tensors}
    audio = {n for n in src_t if n.startswith(("a.", "mm.a."))}
    assert audio and set(dst_t) == set(src_t) - audio
    for name, t in dst_t.items():
        assert t.tensor_type == src_t[name].tensor_type and np.array_equal(t.data, src_t[name].data), name
    assert bool(dst.fields["clip.has_audio_encoder"].contents()) is False
    assert set(dst.fields) == set(src.fields)


def test_libmtmd_loads_vision_only_and_encodes_the_same(tiny_omni, tiny_model, assets, tmp_path, monkeypatch):
    monkeypatch.setenv("PYOMNISIFT_CACHE", str(tmp_path))
    llm, mmproj = tiny_model
    handler = tiny_omni.chat_handler
    assert handler.vision.supports_vision and not handler.vision.supports_audio   # what the handler loaded
    whole = MtmdEncoder(str(mmproj), tiny_omni.model, tiny_omni.n_embd(), 2, use_gpu=False, image_min_tokens=1,
                        image_max_tokens=16384, verbose=False)
    part = MtmdEncoder(vision_only(mmproj), tiny_omni.model, tiny_omni.n_embd(), 2, use_gpu=False,
                       image_min_tokens=1, image_max_tokens=16384, verbose=False)
    try:
        assert whole.supports_audio and not part.supports_audio
        pixels = decode.read_image(assets["test-1.jpeg"])[:224, :280]
        a, b = whole.encode([pixels]), part.encode([pixels])
        assert a[1:] == b[1:] and np.array_equal(a[0], b[0])
    finally:
        whole.close()
        part.close()


def test_refuses_what_is_not_a_vision_mmproj(tiny_model, tmp_path):
    llm, _ = tiny_model
    dst = tmp_path / "out.gguf"
    assert C.omnisift_mmproj_write_vision_only(str(llm).encode(), str(dst).encode()) == C.OMNISIFT_ERR_FILE
    assert b"vision tower" in C.omnisift_last_error() and not dst.exists()
    assert C.omnisift_mmproj_write_vision_only(str(tmp_path / "none.gguf").encode(), str(dst).encode()) == C.OMNISIFT_ERR_FILE
    assert not dst.exists()


@pytest.fixture(scope="module")
def qwen3_omni():
    import make_hf_tiny_families

    return make_hf_tiny_families.make_hf_tiny_family("qwen3-omni")


def test_audio_only_copy_drops_the_vision_tower_only(qwen3_omni, tmp_path, monkeypatch):
    monkeypatch.setenv("PYOMNISIFT_CACHE", str(tmp_path))
    mmproj = qwen3_omni["mmproj"]
    path = audio_only(mmproj)
    assert audio_only(mmproj) == path and path != vision_only(mmproj)
    src, dst = GGUFReader(str(mmproj)), GGUFReader(path)
    src_t = {t.name: t for t in src.tensors}
    dst_t = {t.name: t for t in dst.tensors}
    vision = {n for n in src_t if not n.startswith(("a.", "mm.a."))}
    assert vision and any(n.startswith("v.deepstack") for n in vision) and set(dst_t) == set(src_t) - vision
    for name, t in dst_t.items():
        assert t.tensor_type == src_t[name].tensor_type and np.array_equal(t.data, src_t[name].data), name
    assert bool(dst.fields["clip.has_vision_encoder"].contents()) is False
    assert bool(dst.fields["clip.has_audio_encoder"].contents()) is True
    assert set(dst.fields) == set(src.fields)


def test_libmtmd_refuses_qwen3_omni_whole_and_takes_each_tower(qwen3_omni, tmp_path, monkeypatch):
    """llama.cpp 0.3.36 cannot load the converted Qwen3-Omni mmproj at all (vision rows n_embd x 2
    with the deepstack layer, audio rows n_embd: "mismatch between vision and audio mmproj"); the
    one-tower copies load, the vision one against the model with its deepstack layer, the audio
    one against the vocabulary-only load."""
    import llama_cpp
    from pyomnisift import ModelFileError
    from pyomnisift._mtmd import VocabModel

    monkeypatch.setenv("PYOMNISIFT_CACHE", str(tmp_path))
    params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(qwen3_omni["llm"]).encode(), params)
    vocab = VocabModel(qwen3_omni["llm"], verbose=False)
    try:
        n_embd = llama_cpp.llama_model_n_embd(model)
        assert llama_cpp.llama_model_n_embd_inp(model) == n_embd   # as converted: no deepstack
        with pytest.raises(ModelFileError, match="could not load"):
            MtmdEncoder(qwen3_omni["mmproj"], model, n_embd, 2, use_gpu=False, verbose=False)
        audio = MtmdEncoder(audio_only(qwen3_omni["mmproj"]), vocab, n_embd, 2, use_gpu=False, verbose=False,
                            n_embd_out=2 * n_embd)
        try:
            assert audio.supports_audio and not audio.supports_vision
            t = np.arange(32000) / 16000
            rows = audio.encode_audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
            assert rows.shape[1] == 2 * n_embd and rows[:, :n_embd].any() and not rows[:, n_embd:].any()
        finally:
            audio.close()
    finally:
        vocab.close()
        llama_cpp.llama_model_free(model)


def test_refuses_what_is_not_an_audio_mmproj(qwen3_omni, tmp_path):
    dst = tmp_path / "out.gguf"
    vision = tmp_path / "vision.gguf"
    assert C.omnisift_mmproj_write_vision_only(str(qwen3_omni["mmproj"]).encode(), str(vision).encode()) == C.OMNISIFT_OK
    assert C.omnisift_mmproj_write_audio_only(str(vision).encode(), str(dst).encode()) == C.OMNISIFT_ERR_FILE
    assert b"audio tower" in C.omnisift_last_error() and not dst.exists()

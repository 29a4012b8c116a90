"""One audio tower in memory: libmtmd is given the mmproj without its audio tower (C:
omnisift_mmproj_write_vision_only) when pyomnisift's own tower encodes the audio. The copy holds
every other key and tensor byte for byte, libmtmd loads it as vision-only, and it encodes exactly
what the whole mmproj encodes."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader

from pyomnisift import omnisift_cpp as C
from pyomnisift.media import decode
from pyomnisift._mtmd import MtmdEncoder, vision_only


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

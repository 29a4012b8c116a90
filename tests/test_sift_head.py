"""The learned audio selector (vgas): pyomnisift convert-head round trips, GGUF head loading and
validation, and scores within 1e-4 of the PyTorch module (nn.MultiheadAttention) with the same weights."""

from __future__ import annotations

import copy
import json
import pathlib

import numpy as np
import pytest

import safetensors.torch as safetensors_torch  # noqa: E402
import torch  # noqa: E402

import pyomnisift  # noqa: E402
import sift_reference as ref  # noqa: E402
from test_sift import Seq, assert_matches_reference  # noqa: E402

from pyomnisift import convert_head as conv  # noqa: E402

D = 48


@pytest.fixture(scope="module")
def module():
    return ref.make_vgas_module(D, hidden=64, n_head=8, score_hidden=32, seed=3)


def state_dict(m, prefix=conv.PREFIX):
    return {prefix + k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}


def write_checkpoint(m, tmp: pathlib.Path, kind: str) -> pathlib.Path:
    sd = state_dict(m)
    # Unrelated LLM weights around the selector, as in a full checkpoint.
    sd["thinker.model.embed_tokens.weight"] = torch.zeros(4, D)
    if kind == "safetensors":
        path = tmp / "model.safetensors"
        safetensors_torch.save_file(sd, str(path))
    elif kind == "pt":
        path = tmp / "compressor.pt"
        torch.save({k.removeprefix(conv.PREFIX): v for k, v in sd.items()}, str(path))
    else:
        path = tmp / "ckpt"
        path.mkdir()
        names = sorted(sd)
        weight_map = {}
        for i, part in enumerate((names[::2], names[1::2])):
            shard = f"model-0000{i + 1}-of-00002.safetensors"
            safetensors_torch.save_file({k: sd[k] for k in part}, str(path / shard))
            weight_map.update({k: shard for k in part})
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def omni(rng, d, n_chunks=3):
    s = Seq(d)
    for c in range(n_chunks):
        base = s.grid(rng, 1, 50 * c, 4, 5)
        s.grid(rng, 1, 50 * c + 25, 4, 5, base=base)
        n_audio = (50, 13, 2)[c % 3]
        s.add(2, range(50 * c, 50 * c + n_audio), range(50 * c, 50 * c + n_audio), range(50 * c, 50 * c + n_audio),
              rng.standard_normal((n_audio, d)))
    return s.arrays()


@pytest.mark.parametrize("kind", ["safetensors", "pt", "sharded"])
def test_converted_head_matches_torch(module, tmp_path, kind):
    gguf_path = tmp_path / "head.gguf"
    dims = conv.convert(write_checkpoint(module, tmp_path, kind), gguf_path)
    assert dims == {"n_embd": D, "hidden": 64, "n_head": 8, "score_hidden": 32}
    head = pyomnisift.SiftHead(gguf_path)
    assert (head.n_embd, head.n_hidden) == (D, 64)

    emb, mod, pos = omni(np.random.default_rng(5), D)
    mask, scores = pyomnisift.sift(emb, mod, pos, video_retention=0.6, audio_retention=0.5, audio_selector="vgas",
                                   sift_head=head, return_scores=True)
    audio = np.flatnonzero(mod == 2)
    want = np.full(len(mod), np.nan)
    # Per chunk, against the torch module (float32 module: what the GGUF holds), anchors = kept video.
    for g, rows in ref.chunks(mod, pos[0]):
        anchors = np.concatenate([r[mask[r]] for r in g])
        want[rows] = ref.vgas_scores(module, emb[rows].astype(np.float64), emb[anchors].astype(np.float64))
    np.testing.assert_allclose(scores[audio], want[audio], atol=1e-4, rtol=0)
    # And the whole keep decision against the float64 reference with the same weights.
    assert_matches_reference(emb, mod, pos, video_retention=0.6, audio_retention=0.5, audio_selector="vgas",
                             sift_head=head, ref_head=copy.deepcopy(module).double())
    with pytest.raises(ValueError, match="another engine"):
        pyomnisift.sift(emb, mod, pos, audio_selector="vgas", sift_head=head, engine=pyomnisift.Engine(n_threads=1))
    head.close()


def test_paper_sized_head_from_path(tmp_path):
    # The paper's widths (512 / 8 heads / 256) at a small D, passed as a path.
    m = ref.make_vgas_module(32, seed=4)
    gguf_path = tmp_path / "head.gguf"
    conv.convert(write_checkpoint(m, tmp_path, "safetensors"), gguf_path)
    emb, mod, pos = omni(np.random.default_rng(6), 32, n_chunks=2)
    assert_matches_reference(emb, mod, pos, video_retention=0.3, audio_retention=0.6, audio_selector="vgas",
                             sift_head=str(gguf_path), ref_head=copy.deepcopy(m).double())
    with pytest.raises(TypeError):
        pyomnisift.sift(emb, mod, pos, audio_selector="vgas", sift_head=copy.deepcopy(m))


def test_head_of_another_width_is_rejected(module, tmp_path):
    gguf_path = tmp_path / "head.gguf"
    conv.convert(write_checkpoint(module, tmp_path, "safetensors"), gguf_path)
    emb, mod, pos = omni(np.random.default_rng(7), D + 1)
    with pytest.raises(ValueError, match=f"width {D}"):
        pyomnisift.sift(emb, mod, pos, audio_selector="vgas", sift_head=gguf_path)


def test_converter_errors(module, tmp_path):
    src = write_checkpoint(module, tmp_path, "safetensors")
    with pytest.raises(conv.ConversionError, match="refusing to overwrite"):
        conv.convert(src, src)
    sd = state_dict(module)
    del sd[conv.PREFIX + "cross_attn.out_proj.bias"]
    safetensors_torch.save_file(sd, str(tmp_path / "missing.safetensors"))
    with pytest.raises(conv.ConversionError, match="missing selector tensors cross_attn.out_proj.bias"):
        conv.convert(tmp_path / "missing.safetensors", tmp_path / "x.gguf")
    sd = state_dict(module)
    sd[conv.PREFIX + "a_proj.weight"] = torch.zeros(64, D + 2)
    safetensors_torch.save_file(sd, str(tmp_path / "shape.safetensors"))
    with pytest.raises(conv.ConversionError, match=r"a_proj.weight is \(64, 50\), expected \(64, 48\)"):
        conv.convert(tmp_path / "shape.safetensors", tmp_path / "x.gguf")
    with pytest.raises(conv.ConversionError, match="does not divide"):
        conv.convert(src, tmp_path / "x.gguf", n_head=5)
    assert not (tmp_path / "x.gguf").exists()
    assert conv.main([str(tmp_path / "nothing.safetensors"), str(tmp_path / "x.gguf")]) == 1


def test_corrupt_head_files_raise(module, tmp_path):
    good = tmp_path / "head.gguf"
    conv.convert(write_checkpoint(module, tmp_path, "safetensors"), good)
    data = good.read_bytes()
    (tmp_path / "truncated.gguf").write_bytes(data[: len(data) - 1000])
    (tmp_path / "garbage.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    for name, match in [("truncated.gguf", "truncated"), ("garbage.gguf", "not a valid GGUF"),
                        ("absent.gguf", "no such file")]:
        with pytest.raises(pyomnisift.ModelFileError, match=match):
            pyomnisift.SiftHead(tmp_path / name)

    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "llm.gguf"), "qwen2")
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(pyomnisift.ModelFileError, match="not an OmniSIFT head"):
        pyomnisift.SiftHead(tmp_path / "llm.gguf")

    w = gguf.GGUFWriter(str(tmp_path / "short.gguf"), "omnisift-head")
    for k, v in {"n_embd": D, "hidden": 64, "n_head": 8, "score_hidden": 32}.items():
        w.add_uint32(f"omnisift.{k}", v)
    w.add_tensor("v_proj.weight", np.zeros((64, D), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(pyomnisift.ModelFileError, match="missing tensor v_proj.bias"):
        pyomnisift.SiftHead(tmp_path / "short.gguf")

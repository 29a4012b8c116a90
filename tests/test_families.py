"""The model family is told from the GGUF pair (Qwen2.5-VL's, Qwen3-Omni's and Qwen3-VL's served:
tests/test_parity_qwen25_vl.py, test_parity_qwen3_omni.py, test_parity_qwen3_vl.py),
and a pair pyomnisift does not serve is refused by name before anything loads (serving it would build a Qwen2.5-Omni sequence for another model: a silent
wrong answer).

The reference for what each pair is: llama.cpp's own converter (pinned sdist) run on tiny random
transformers checkpoints of Qwen2.5-VL, Qwen3-VL and Qwen3-Omni (scripts/make_hf_tiny_families.py)
and, for a family not served, an mmproj header as that converter writes it (Qwen2-VL's)
and of Qwen2.5-Omni (scripts/make_hf_tiny_omni.py)."""

from __future__ import annotations

import pytest

import pyomnisift
from pyomnisift._families import SUPPORTED, family_of
from test_cli import one_line_error, run
from test_foundation import write_gguf

# unserved pair -> the name the error must give: Qwen2-VL's mmproj (its projector type as llama.cpp's
# converter writes it; the header is all the detection reads) beside Qwen2.5-VL's converted LLM, the
# same architecture
UNSERVED = {"qwen2-vl": "Qwen2-VL"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import make_hf_tiny_families  # imports transformers: a missing reference fails, never skips

    out = {name: make_hf_tiny_families.make_hf_tiny_family(name) for name in ("qwen2.5-vl", "qwen3-vl", "qwen3-omni")}
    mmproj = write_gguf(tmp_path_factory.mktemp("qwen2-vl") / "mmproj.gguf", "clip", {
        "clip.projector_type": "qwen2vl_merger", "clip.has_vision_encoder": True, "clip.has_audio_encoder": False,
        "clip.vision.projection_dim": 128})
    out["qwen2-vl"] = {"llm": out["qwen2.5-vl"]["llm"], "mmproj": mmproj}
    return out


@pytest.fixture(scope="module")
def omni_pair():
    import make_hf_tiny_omni

    return make_hf_tiny_omni.make_hf_tiny_omni()


@pytest.mark.parametrize("name", sorted(UNSERVED))
def test_unserved_families_are_refused_by_name(converted, name):
    paths = converted[name]
    with pytest.raises(pyomnisift.UnsupportedModelError) as e:
        pyomnisift.check_pair(paths["llm"], paths["mmproj"])
    msg = str(e.value)
    assert e.value.path == str(paths["mmproj"])
    assert f"{UNSERVED[name]}'s mmproj" in msg, msg
    for family in SUPPORTED:   # and says what is served
        assert family.name in msg, msg
    # the Llama class refuses before llama.cpp loads the model
    with pytest.raises(pyomnisift.UnsupportedModelError, match=UNSERVED[name]):
        pyomnisift.Llama(paths["llm"], paths["mmproj"], n_ctx=256)


def test_unserved_family_text_only_still_loads(converted):
    """Without an mmproj a GGUF is text, as in llama-cpp-python: any family's LLM answers."""
    llm = pyomnisift.Llama(converted["qwen2-vl"]["llm"], n_ctx=256)
    out = llm.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=3, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1


def test_handler_refuses_on_its_first_use(converted):
    """llama-cpp-python's way (a handler given to llama_cpp.Llama) refuses on the first request."""
    import llama_cpp

    paths = converted["qwen2-vl"]
    handler = pyomnisift.OmniSIFTChatHandler(str(paths["mmproj"]))
    llama = llama_cpp.Llama(str(paths["llm"]), chat_handler=handler, n_ctx=256, verbose=False)
    with pytest.raises(pyomnisift.UnsupportedModelError, match="Qwen2-VL"):
        llama.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=1)


def test_cli_names_the_family(converted):
    paths = converted["qwen2-vl"]
    one_line_error(run("chat", "-m", paths["llm"], "--mmproj", paths["mmproj"], "-p", "hi"),
                   "Qwen2-VL", "does not serve")


def test_qwen3_omni_mmproj_beside_an_unserved_model(converted):
    """Qwen3-Omni's mmproj (vision + audio) beside Qwen3-VL's dense LLM: named, not served."""
    with pytest.raises(pyomnisift.UnsupportedModelError) as e:
        pyomnisift.check_pair(converted["qwen3-vl"]["llm"], converted["qwen3-omni"]["mmproj"])
    msg = str(e.value)
    assert "Qwen3-Omni's" in msg and "'qwen3vl'" in msg and "qwen3vlmoe" in msg, msg


def test_served_pairs(omni_pair, converted, tiny_audio_model):
    llm, mm = pyomnisift.check_pair(omni_pair["llm"], omni_pair["mmproj"])
    assert family_of(llm, mm).name == "Qwen2.5-Omni"
    llm, mm = pyomnisift.check_pair(converted["qwen2.5-vl"]["llm"], converted["qwen2.5-vl"]["mmproj"])
    assert family_of(llm, mm).name == "Qwen2.5-VL"
    llm, mm = pyomnisift.check_pair(*tiny_audio_model)
    assert family_of(llm, mm).name == "Qwen2-Audio"
    llm, mm = pyomnisift.check_pair(converted["qwen3-omni"]["llm"], converted["qwen3-omni"]["mmproj"])
    assert family_of(llm, mm).name == "Qwen3-Omni" and mm.n_deepstack == 1
    # Qwen3-VL's vision-only mmproj is Qwen3-VL's, not a part of Qwen3-Omni's (same vision projector)
    llm, mm = pyomnisift.check_pair(converted["qwen3-vl"]["llm"], converted["qwen3-vl"]["mmproj"])
    assert family_of(llm, mm).name == "Qwen3-VL" and mm.n_deepstack == 1


def test_mmproj_next_to_another_family_model(converted, omni_pair):
    """Qwen2.5-Omni's mmproj beside Qwen3-VL's LLM (same width): refused naming both."""
    with pytest.raises(pyomnisift.UnsupportedModelError) as e:
        pyomnisift.check_pair(converted["qwen3-vl"]["llm"], omni_pair["mmproj"])
    msg = str(e.value)
    assert "Qwen2.5-Omni's" in msg and "'qwen3vl'" in msg and "qwen2vl" in msg, msg


def test_unknown_projector(omni_pair, tmp_path):
    mmproj = write_gguf(tmp_path / "gemma-mmproj.gguf", "clip", {
        "clip.projector_type": "gemma3", "clip.has_vision_encoder": True, "clip.has_audio_encoder": False,
        "clip.vision.projection_dim": 128})
    with pytest.raises(pyomnisift.UnsupportedModelError, match=r"vision projector 'gemma3'.*does not serve"):
        pyomnisift.check_pair(omni_pair["llm"], mmproj)
    empty = write_gguf(tmp_path / "empty-mmproj.gguf", "clip", {
        "clip.projector_type": "qwen2.5o", "clip.has_vision_encoder": False, "clip.has_audio_encoder": False})
    with pytest.raises(pyomnisift.UnsupportedModelError, match="neither a vision nor an audio encoder"):
        pyomnisift.check_pair(omni_pair["llm"], empty)

"""The omni sequence layout against transformers' Qwen2.5-Omni get_rope_index (the reference)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from pyomnisift import _sequence as S

torch = pytest.importorskip("torch")
omni = pytest.importorskip("transformers.models.qwen2_5_omni.modeling_qwen2_5_omni")

TEXT, VISION_BOS, VISION_EOS = 100, 151652, 151653
AUDIO, AUDIO_BOS, AUDIO_EOS, IMAGE, VIDEO = 151646, 151647, 151648, 151655, 151656


def reference():
    """An object with just what get_rope_index reads (a model instance would need weights)."""
    cls = omni.Qwen2_5OmniPreTrainedModelForConditionalGeneration
    cfg = types.SimpleNamespace(image_token_id=IMAGE, video_token_id=VIDEO, audio_token_id=AUDIO,
                                vision_start_token_id=VISION_BOS, audio_start_token_id=AUDIO_BOS,
                                position_id_per_seconds=25, seconds_per_chunk=2)
    ref = types.SimpleNamespace(config=cfg, spatial_merge_size=2)
    for name in ("get_rope_index", "get_llm_pos_ids_for_vision", "get_chunked_index"):
        setattr(ref, name, types.MethodType(getattr(cls, name), ref))
    return ref


def mel_frames_for(n_audio_tokens: int) -> int:
    """A mel length that the reference maps to exactly n_audio_tokens."""
    for L in range(1, 4 * n_audio_tokens + 8):
        if ((L - 1) // 2 + 1 - 2) // 2 + 1 == n_audio_tokens:
            return L
    raise AssertionError(n_audio_tokens)


def layout_ids(blocks, n_prefix: int, n_suffix: int, bos: list, eos: list) -> list:
    """Token ids of: text prefix, bos tokens, the blocks' placeholders, eos tokens, text suffix."""
    ids = [TEXT] * n_prefix + bos
    for b in blocks:
        ids += [{S.MODALITY_VIDEO: VIDEO, S.MODALITY_AUDIO: AUDIO, S.MODALITY_IMAGE: IMAGE}[b.modality]] * b.n_rows
    return ids + eos + [TEXT] * n_suffix


def our_positions(blocks, n_prefix: int, n_bos: int, n_suffix: int, media_start: int) -> np.ndarray:
    pre = S.audio_positions(n_prefix, 0)
    bos = np.full((3, n_bos), n_prefix, np.int32)  # several bos tokens share one position
    media = np.concatenate([b.positions for b in blocks], axis=1)
    end = S.end_position(blocks, media_start)
    eos = np.full((3, n_bos), end, np.int32)
    post = S.audio_positions(n_suffix, end + 1)
    return np.concatenate([pre, bos, media, eos, post], axis=1)


@pytest.mark.parametrize("n_grids,gh,gw,n_audio", [
    (10, 13, 26, 250),   # test-3.mp4 at 2 fps: 10 s, 728x364
    (3, 2, 3, 75),       # odd grid count: a one-grid tail chunk
    (4, 3, 2, 30),       # audio shorter than the video: chunks without audio
    (2, 2, 2, 260),      # audio longer than the video: chunks without video
    (1, 4, 4, 1),
])
def test_video_with_audio_matches_reference(n_grids, gh, gw, n_audio):
    n_prefix, n_suffix = 7, 5
    start = n_prefix + 1
    blocks = S.video_with_audio_blocks(n_grids, gh, gw, n_audio, start)
    ids = layout_ids(blocks, n_prefix, n_suffix, [VISION_BOS, AUDIO_BOS], [AUDIO_EOS, VISION_EOS])
    ref_pos, _ = reference().get_rope_index(
        torch.tensor([ids]), video_grid_thw=torch.tensor([[n_grids * 1, gh * 2, gw * 2]]),
        use_audio_in_video=True, audio_seqlens=torch.tensor([mel_frames_for(n_audio)]),
        second_per_grids=torch.tensor([1.0]))
    np.testing.assert_array_equal(our_positions(blocks, n_prefix, 2, n_suffix, start), ref_pos[:, 0].numpy())
    # Each chunk is video first, then audio, and every modality keeps its own order.
    kinds = [b.modality for b in blocks]
    assert kinds.count(S.MODALITY_VIDEO) == n_grids
    assert sum(b.n_rows for b in blocks if b.modality == S.MODALITY_AUDIO) == n_audio


def test_video_without_audio_matches_reference():
    blocks = S.video_blocks(5, 3, 4, start=4)
    ids = layout_ids(blocks, 3, 2, [VISION_BOS], [VISION_EOS])
    ref_pos, _ = reference().get_rope_index(
        torch.tensor([ids]), video_grid_thw=torch.tensor([[5, 6, 8]]), second_per_grids=torch.tensor([1.0]))
    np.testing.assert_array_equal(our_positions(blocks, 3, 1, 2, 4), ref_pos[:, 0].numpy())


def test_image_and_audio_match_reference():
    img = S.image_blocks(4, 6, start=3)
    img_end = S.end_position(img, 3)
    aud = S.audio_blocks(40, start=img_end + 2)  # eos of the image, then bos of the audio
    ids = [TEXT, TEXT, VISION_BOS] + [IMAGE] * 24 + [VISION_EOS, AUDIO_BOS] + [AUDIO] * 40 + [AUDIO_EOS, TEXT]
    ref_pos, _ = reference().get_rope_index(
        torch.tensor([ids]), image_grid_thw=torch.tensor([[1, 8, 12]]),
        audio_seqlens=torch.tensor([mel_frames_for(40)]))
    ours = np.concatenate([S.audio_positions(2, 0), np.full((3, 1), 2), img[0].positions,
                           np.full((3, 1), img_end), np.full((3, 1), img_end + 1), aud[0].positions,
                           np.full((3, 1), img_end + 42), np.full((3, 1), img_end + 43)], axis=1)
    np.testing.assert_array_equal(ours, ref_pos[:, 0].numpy())


# --- Qwen3-Omni: a video's audio merged with it token by token (its processor and get_rope_index)

Q3_AUDIO, Q3_AUDIO_BOS, Q3_AUDIO_EOS = 151675, 151669, 151670


def reference_qwen3_omni():
    q3 = pytest.importorskip("transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe")
    cls = q3.Qwen3OmniMoePreTrainedModelForConditionalGeneration
    cfg = types.SimpleNamespace(image_token_id=IMAGE, video_token_id=VIDEO, audio_token_id=Q3_AUDIO,
                                vision_start_token_id=VISION_BOS, audio_start_token_id=Q3_AUDIO_BOS,
                                position_id_per_seconds=13, audio_config=types.SimpleNamespace(n_window=50))
    ref = types.SimpleNamespace(config=cfg, spatial_merge_size=2)
    for name in ("get_rope_index", "get_llm_pos_ids_for_vision"):
        setattr(ref, name, types.MethodType(getattr(cls, name), ref))
    return ref, q3._get_feat_extract_output_lengths


def processor_order(n_grids, gh, gw, n_audio, seconds_per_grid):
    """Qwen3OmniMoeProcessor.replace_video_with_audio_token's placeholder string, as token kinds."""
    proc = pytest.importorskip("transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe")
    stub = types.SimpleNamespace(audio_bos_token="B", audio_eos_token="E", video_token="V", audio_token="A",
                                 video_processor=types.SimpleNamespace(merge_size=2))
    s = proc.Qwen3OmniMoeProcessor.replace_video_with_audio_token(
        stub, {"video_grid_thw": [[n_grids, 2 * gh, 2 * gw]], "video_second_per_grid": [seconds_per_grid]}, 0,
        {"num_audio_tokens": [n_audio]}, 0, position_id_per_seconds=13)
    assert s[0] == "B" and s[-1] == "E"
    return s[1:-1]


@pytest.mark.parametrize("n_grids,gh,gw,frames,fps", [(4, 3, 4, 400, 2.0), (5, 2, 3, 409, 2.0), (3, 4, 4, 250, 2.0),
                                                     (4, 2, 2, 400, 1.5), (2, 3, 3, 700, 0.5)])
def test_qwen3_omni_video_with_audio_matches_reference(n_grids, gh, gw, frames, fps):
    """Order and positions of text, <|vision_start|><|audio_start|>, the merged media,
    <|audio_end|><|vision_end|>, text; at 1.5 frames a second the reference's grid t is fractional
    (17.33 per grid): the order follows the float, the position is its integer part."""
    ref, out_len = reference_qwen3_omni()
    n_audio = int(out_len(torch.tensor(frames), 50))
    spg = 2 / fps
    kinds = processor_order(n_grids, gh, gw, n_audio, spg)
    n_before, start = 3, 5                   # text, then the two wrappers at 3 and 4
    blocks = S.video_with_audio_interleaved(n_grids, gh, gw, n_audio, start, spg, 13)
    ours = "".join(("V" if b.modality == S.MODALITY_VIDEO else "A") * b.n_rows for b in blocks)
    assert ours == kinds
    ids = [TEXT] * n_before + [VISION_BOS, Q3_AUDIO_BOS] + [VIDEO if k == "V" else Q3_AUDIO for k in kinds] \
        + [Q3_AUDIO_EOS, VISION_EOS] + [TEXT] * 2
    pos, _ = ref.get_rope_index(torch.tensor([ids]), None, torch.tensor([[n_grids, 2 * gh, 2 * gw]]),
                                torch.ones(1, len(ids), dtype=torch.long), True, torch.tensor([frames]),
                                torch.tensor([spg]))
    pos = pos[:, 0].double().numpy()
    end = S.end_position(blocks, start)
    mine = np.concatenate([np.broadcast_to(np.arange(5), (3, 5))] + [b.positions for b in blocks]
                          + [np.broadcast_to(np.arange(end, end + 4), (3, 4))], axis=1)
    np.testing.assert_array_equal(mine, np.floor(pos))

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

"""The prompt side of the plugin (vLLM's front-end process): placeholder counts and item fields.

vLLM's Qwen2.5-Omni processor turns a video with its sound (`use_audio_in_video`) into one span,
<|audio_bos|> (video and audio tokens, per 2-second chunk) <|audio_eos|>, and two items over it: the
video (its rows go to the video tokens) and the audio (its rows to the audio tokens), encoded
separately. OmniSIFT chooses the audio by the video that survives in the same chunk, so here the
video item becomes the whole span: it carries its audio track's features too and its encoder
returns the kept rows of both, in sequence order; the audio item stays (vLLM pairs items by
count) with no row of its own. The span holds exactly as many placeholders as the C rule keeps
(`layout.placeholder_labels`), so the scheduler, the KV cache and the encoder cache see the
compressed length from the start.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from vllm.model_executor.models.qwen2_5_omni_thinker import (
    Qwen2_5OmniThinkerMultiModalProcessor, _get_feat_extract_output_lengths)
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails
from vllm.multimodal.processing.processor import PlaceholderFeaturesInfo

from . import settings as S
from .layout import item_layout, placeholder_labels

# Fields added to a video item that carries its sound.
AUDIO_FEATURES = "omnisift_audio_features"      # [n_mels, frames] its track's log-mel
AUDIO_LENGTHS = "omnisift_audio_feature_lengths"  # [1] frames
SETTINGS = "omnisift_settings"                  # [4] settings.encode
# Field added to an audio item that is a video's track: its rows come with the video's.
IN_VIDEO = "omnisift_in_video"


def audio_tokens(feature_length: int) -> int:
    """Audio tokens of a clip of `feature_length` mel frames (the tower's conv + pooling)."""
    return int(_get_feat_extract_output_lengths(torch.tensor(int(feature_length)))[1])


class OmniSiftQwen2_5OmniProcessor(Qwen2_5OmniThinkerMultiModalProcessor):

    def _settings(self, hf_kwargs: Mapping[str, object]):
        return S.settings_from(self.info.ctx.get_merged_mm_kwargs(hf_kwargs))

    def _call_hf_processor(self, hf_data, hf_kwargs):
        return super()._call_hf_processor(hf_data, S.without_settings(hf_kwargs))

    def _postprocess_hf_mm_data(self, hf_data, hf_kwargs, processed_data):
        processed_data = super()._postprocess_hf_mm_data(hf_data, hf_kwargs, processed_data)
        lengths = processed_data.get("audio_feature_lengths")
        grids = processed_data.get("video_grid_thw")
        if not hf_kwargs.get("use_audio_in_video") or grids is None or lengths is None:
            return processed_data
        n_videos = len(grids)
        lengths = lengths.flatten()
        if len(lengths) != n_videos:
            raise ValueError(f"use_audio_in_video needs one audio track per video, got {len(lengths)} "
                             f"audio items for {n_videos} videos")
        settings = self._settings(hf_kwargs)  # validated here: a bad value is the request's error
        processed_data[AUDIO_FEATURES] = processed_data["input_audio_features"]
        processed_data[AUDIO_LENGTHS] = lengths.clone()
        processed_data[SETTINGS] = torch.tensor([S.encode(settings)] * n_videos, dtype=torch.float64)
        processed_data[IN_VIDEO] = torch.ones(n_videos, dtype=torch.bool)
        return processed_data

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        config = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        if AUDIO_LENGTHS in hf_inputs:
            config.update({
                AUDIO_FEATURES: MultiModalFieldConfig.flat_from_sizes("video", hf_inputs[AUDIO_LENGTHS], dim=1),
                AUDIO_LENGTHS: MultiModalFieldConfig.batched("video", keep_on_cpu=True),
                SETTINGS: MultiModalFieldConfig.batched("video", keep_on_cpu=True),
                IN_VIDEO: MultiModalFieldConfig.batched("audio", keep_on_cpu=True),
            })
        return config

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = list(super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs))
        out_mm_data = out_mm_kwargs.get_data()
        if not hf_processor_mm_kwargs.get("use_audio_in_video") or AUDIO_LENGTHS not in out_mm_data:
            return updates
        config = self.info.get_hf_config()
        merge = config.vision_config.spatial_merge_size
        video_token, audio_token = config.video_token_index, config.audio_token_index
        settings = self._settings(hf_processor_mm_kwargs)

        def joint_replacement(item_idx: int):
            t, h, w = (int(x) for x in out_mm_data["video_grid_thw"][item_idx])
            layout = item_layout(t, h // merge, w // merge,
                                 audio_tokens(out_mm_data[AUDIO_LENGTHS][item_idx]),
                                 seconds_per_grid(out_mm_data, item_idx))
            seq = ([config.audio_start_token_id]
                   + placeholder_labels(layout, settings, video_token, audio_token)
                   + [config.audio_end_token_id])
            return PromptUpdateDetails.select_token_ids(seq, [video_token, audio_token])

        return [PromptReplacement(modality="video", target=[video_token], replacement=joint_replacement)
                if u.modality == "video" else u for u in updates]

    def _derive_audio_from_video_placeholders(self, placeholders, mm_prompt_updates):
        placeholders = dict(super()._derive_audio_from_video_placeholders(placeholders, mm_prompt_updates))
        config = self.info.get_hf_config()
        embed_ids = torch.tensor([config.video_token_index, config.audio_token_index])
        if "video" in placeholders:
            placeholders["video"] = [_with_is_embed(p, torch.isin(torch.tensor(p.tokens), embed_ids))
                                     for p in placeholders["video"]]
            placeholders["audio"] = [_with_is_embed(p, torch.zeros(len(p.tokens), dtype=torch.bool))
                                     for p in placeholders.get("audio", [])]
        return placeholders


def seconds_per_grid(mm_data: Mapping[str, Any], item_idx: int) -> float:
    """A video's seconds per grid as the model reads it (the item's second_per_grid_ts, else 1)."""
    value = mm_data.get("second_per_grid_ts")
    if value is None:
        return 1.0
    return float(value[item_idx])


def _with_is_embed(p: PlaceholderFeaturesInfo, is_embed: torch.Tensor) -> PlaceholderFeaturesInfo:
    return PlaceholderFeaturesInfo(modality=p.modality, item_idx=p.item_idx, start_idx=p.start_idx,
                                   tokens=p.tokens, is_embed=is_embed)

"""The encoder side of the plugin (vLLM's workers): OmniSIFT on the projector outputs.

`OmniSiftQwen2_5OmniThinker` is vLLM's Qwen2.5-Omni thinker with four changes:
- a video that carries its sound (see processor.py) is encoded by the model's own vision and audio
  towers, laid out as the omni sequence (layout.py), sifted by pyomnisift's C library
  (`pyomnisift.sift`, the same call `pyomnisift.Llama` makes), and returned as its kept rows in
  sequence order, each with its original position appended (positions.py); its audio item returns
  no row;
- `get_mrope_input_positions` gives the text and everything after each such item the positions of
  the uncompressed sequence, as transformers' `get_rope_index` does;
- `recompute_mrope_positions` (vLLM's multimodal-pruning hook, `SupportsMultiModalPruning`) puts
  the kept rows at their original positions;
- `embed_input_ids` merges rows in prompt order (the span's rows arrive as one tensor, so vLLM's
  per-modality scatter for interleaved audio and video does not apply).
vLLM's model runner calls the pruning hook only when `video_pruning_rate` is set; the model sets it
in its own process (it is read nowhere else for this model), and refuses a rate the user set, since
EVS is not what this model runs.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import torch
from vllm.model_executor.models.interfaces import SupportsMultiModal, SupportsMultiModalPruning
from vllm.model_executor.models.qwen2_5_omni_thinker import (
    Qwen2_5OmniAudioFeatureInputs, Qwen2_5OmniThinkerDummyInputsBuilder,
    Qwen2_5OmniThinkerForConditionalGeneration, Qwen2_5OmniThinkerProcessingInfo)
from vllm.multimodal import MULTIMODAL_REGISTRY

from .. import _sift
from .._sequence import end_position, video_with_audio_blocks
from . import positions as P
from . import settings as S
from .layout import item_layout
from .processor import (AUDIO_FEATURES, AUDIO_LENGTHS, IN_VIDEO, SETTINGS, OmniSiftQwen2_5OmniProcessor,
                        audio_tokens, seconds_per_grid)

# <|vision_bos|> / <|vision_eos|> of the released vocabulary, when the thinker's config does not
# name them (transformers' Qwen2_5OmniThinkerConfig has no such field; released configs carry it).
VISION_BOS, VISION_EOS = 151652, 151653
# video_pruning_rate that switches the runner's hook on; nothing reads its value for this model.
_HOOK_RATE = 1e-9
# PYOMNISIFT_VLLM_RECORD=DIR: each sifted item's rows, layout and keep mask go to DIR/item-N-PID.npz
# (what tests/vllm compares with pyomnisift and transformers; also for looking at a selection).
RECORD_ENV = "PYOMNISIFT_VLLM_RECORD"
_record_ids = itertools.count()


@MULTIMODAL_REGISTRY.register_processor(OmniSiftQwen2_5OmniProcessor, info=Qwen2_5OmniThinkerProcessingInfo,
                                        dummy_inputs=Qwen2_5OmniThinkerDummyInputsBuilder)
class OmniSiftQwen2_5OmniThinker(Qwen2_5OmniThinkerForConditionalGeneration, SupportsMultiModalPruning):
    supports_multimodal_pruning = True

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        mm_config = vllm_config.model_config.multimodal_config
        if mm_config.video_pruning_rate not in (None, 0.0, _HOOK_RATE):
            raise ValueError("--video-pruning-rate (EVS) does not apply with pyomnisift's vLLM plugin: set "
                             "video_retention / audio_retention in --mm-processor-kwargs instead")
        mm_config.video_pruning_rate = _HOOK_RATE
        self._width = self.config.text_config.hidden_size
        talker = getattr(vllm_config.model_config.hf_config, "talker_config", None)
        self._vision_bos, self._vision_eos = (
            getattr(self.config, name, None) or getattr(talker, name, None) or default
            for name, default in (("vision_start_token_id", VISION_BOS), ("vision_end_token_id", VISION_EOS)))

    # -- encoder --------------------------------------------------------------------------------

    def embed_multimodal(self, **kwargs):
        if kwargs.get(SETTINGS) is not None:
            return self._embed_videos_with_sound(kwargs)
        in_video = kwargs.get(IN_VIDEO)
        if in_video is not None and bool(torch.as_tensor(in_video).all()):
            # A video's track: its rows came with the video's.
            n = len(torch.as_tensor(in_video).flatten())
            device = kwargs["input_audio_features"].device if torch.is_tensor(kwargs.get("input_audio_features")) else None
            return tuple(torch.empty((0, self._width), dtype=self.visual.dtype, device=device) for _ in range(n))
        out = super().embed_multimodal(**kwargs)
        if in_video is not None:
            out = tuple(o[:0] if flag else o for o, flag in zip(out, torch.as_tensor(in_video).flatten()))
        return out

    def _embed_videos_with_sound(self, kwargs) -> tuple[torch.Tensor, ...]:
        video_input = self._parse_and_validate_video_input(**kwargs)
        video_rows = self._process_video_input(video_input)
        lengths = torch.as_tensor(kwargs[AUDIO_LENGTHS]).flatten()
        features = kwargs[AUDIO_FEATURES]
        if isinstance(features, (list, tuple)):
            features = torch.cat(list(features), dim=-1)
        audio_rows = self._process_audio_input(Qwen2_5OmniAudioFeatureInputs(
            type="audio_features", input_features=features, audio_feature_lengths=lengths,
            feature_attention_mask=torch.arange(int(lengths.max()))[None, :] < lengths[:, None]))
        grids = torch.as_tensor(video_input["video_grid_thw"])
        settings = torch.as_tensor(kwargs[SETTINGS]).reshape(-1, 4)
        merge = self.visual.spatial_merge_size
        out = []
        for i, (video, audio) in enumerate(zip(video_rows, audio_rows)):
            t, h, w = (int(x) for x in grids[i])
            n_audio = audio_tokens(lengths[i])
            if audio.shape[0] != n_audio:
                raise RuntimeError(f"OmniSIFT: the audio tower gave {audio.shape[0]} rows, expected {n_audio}")
            layout = item_layout(t, h // merge, w // merge, n_audio, seconds_per_grid(kwargs, i))
            rows = torch.cat([video, audio.to(video.dtype)])[torch.from_numpy(layout.source).to(video.device)]
            params = S.decode(settings[i])
            keep = _sift.sift(rows.detach().float().cpu().numpy(), layout.modality, layout.positions, **params)
            kept = rows[torch.from_numpy(keep).to(rows.device)]
            if os.environ.get(RECORD_ENV):
                _record(Path(os.environ[RECORD_ENV]), rows, layout, keep, settings[i])
            out.append(P.append_positions(kept, layout.positions[:, keep]))
        return tuple(out)

    def embed_input_ids(self, input_ids, multimodal_embeddings=None, *, is_multimodal=None):
        return SupportsMultiModal.embed_input_ids(self, input_ids, multimodal_embeddings,
                                                  is_multimodal=is_multimodal)

    # -- positions ------------------------------------------------------------------------------

    def recompute_mrope_positions(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens):
        c = self.config
        return P.recompute(input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens, self._width,
                           [c.image_token_index, c.video_token_index, c.audio_token_index])

    def get_mrope_input_positions(self, input_tokens, mm_features):
        """vLLM's rule for text, images, audio and silent video; transformers' for a video with its
        sound: <|vision_bos|><|audio_bos|> share one position, the rows start one past it, laid out
        as the full sequence, and <|audio_eos|><|vision_eos|> share the position one past the last
        block's largest (layout.py). The span's placeholders get the item's start as a provisional
        position, corrected by recompute_mrope_positions once the rows are chosen."""
        lengths = {f.mm_position.offset: f.mm_position.length for f in mm_features if f.modality == "video"}
        pieces: list[np.ndarray] = []
        st = 0

        def next_pos() -> int:
            return int(pieces[-1].max()) + 1 if pieces else 0

        def text(n: int, at: int) -> None:
            if n > 0:
                pieces.append(np.broadcast_to(np.arange(n), (3, n)) + at)

        for offset, modality, data in self.iter_mm_features(mm_features):
            if modality == "video" and data["use_audio_in_video"]:
                shared_bos = offset > 0 and input_tokens[offset - 1] == self._vision_bos
                text(offset - st - (1 if shared_bos else 0), next_pos())
                p = next_pos()
                pieces.append(np.full((3, 2 if shared_bos else 1), p))
                start = p + 1
                n_audio = audio_tokens(data["audio_feature_length"])
                blocks = video_with_audio_blocks(data["grid_t"], data["grid_h"], data["grid_w"], n_audio, start,
                                                 data["t_factor"] / 25.0)
                end = end_position(blocks, start)
                n_rows = lengths[offset] - 2
                pieces.append(np.full((3, n_rows), start))
                after = offset + lengths[offset]
                shared_eos = after < len(input_tokens) and input_tokens[after] == self._vision_eos
                # the two eos tokens: next_pos() must give end + 1 afterwards
                pieces.append(np.full((3, 2 if shared_eos else 1), end))
                st = after + (1 if shared_eos else 0)
                continue
            text(offset - st, next_pos())
            st_idx = next_pos()
            if modality == "audio":
                n = audio_tokens(data["audio_feature_length"])
                pieces.append(np.broadcast_to(np.arange(n), (3, n)) + st_idx)
                st = offset + n
            else:  # image, or video without its sound: vLLM's (and transformers') grid positions
                grid = np.indices((data["grid_t"], data["grid_h"], data["grid_w"]))
                if data["t_factor"] != 1.0:
                    grid[0] = (grid[0] * data["t_factor"]).astype(np.int64)
                pieces.append(grid.reshape(3, -1) + st_idx)
                st = offset + data["grid_t"] * data["grid_h"] * data["grid_w"]
        if st < len(input_tokens):
            text(len(input_tokens) - st, next_pos())
        positions = np.concatenate(pieces, axis=1).reshape(3, -1)
        assert positions.shape[1] == len(input_tokens), (positions.shape, len(input_tokens))
        return torch.from_numpy(positions.astype(np.int64)), int(positions.max()) + 1 - len(input_tokens)


def _record(directory: Path, rows, layout, keep, settings) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / f"item-{next(_record_ids)}-{os.getpid()}.npz", rows=rows.detach().float().cpu().numpy(),
             modality=layout.modality, positions=layout.positions, keep=keep,
             settings=np.asarray(settings, dtype=np.float64))

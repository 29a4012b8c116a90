"""The transformers side of tests/vllm: the same request through transformers' own Qwen2.5-Omni
processor and thinker (float32, eager attention), with OmniSIFT applied by pyomnisift to the
thinker's projector outputs, and greedy decoding of the kept rows at their original positions.

Processor: `Qwen2_5OmniProcessor.from_pretrained` on the checkpoint directory, the processor vLLM
itself instantiates, called with the same media and `use_audio_in_video=True`, so both sides start
from the same pixels, log-mel features and placeholder layout. Positions: the thinker's own
`get_rope_index` over the full (uncompressed) sequence. Decoding runs without a KV cache (the whole
sequence each step, a sequence-order causal mask, as vLLM's attention has), next positions one past
the prompt's largest, as `get_rope_index`'s rope delta gives them.
"""

from __future__ import annotations

import numpy as np
import torch

import pyomnisift

VISION_START_TOKEN_ID = 151652


class Reference:
    def __init__(self, model_dir: str):
        from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration

        self.processor = Qwen2_5OmniProcessor.from_pretrained(model_dir)
        self.thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            model_dir, dtype="float32", attn_implementation="eager").eval()
        self.thinker.config.vision_start_token_id = VISION_START_TOKEN_ID  # read by get_rope_index
        self.cfg = self.thinker.config

    def inputs(self, prompt: str, frames: np.ndarray, audio: np.ndarray) -> dict:
        return dict(self.processor(text=prompt, videos=[frames], audio=[audio], use_audio_in_video=True,
                                   return_tensors="pt"))

    @torch.no_grad()
    def sequence(self, inputs: dict):
        """(input_ids [L], embeddings [L, D], positions [3, L], media rows' modality [L] in
        pyomnisift's codes: 0 text, 1 video, 2 audio)."""
        t = self.thinker
        ids = inputs["input_ids"]
        embeds = t.get_input_embeddings()(ids)[0]
        video = torch.cat(t.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output)
        audio = t.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).last_hidden_state
        is_video, is_audio = ids[0] == self.cfg.video_token_id, ids[0] == self.cfg.audio_token_id
        embeds[is_video], embeds[is_audio] = video, audio
        positions, _ = t.get_rope_index(ids, None, inputs["video_grid_thw"], torch.ones_like(ids), True,
                                        inputs["feature_attention_mask"].sum(-1),
                                        inputs.get("video_second_per_grid"))
        modality = np.zeros(ids.shape[1], np.int32)
        modality[is_video.numpy()], modality[is_audio.numpy()] = 1, 2
        return ids[0], embeds, positions[:, 0], modality

    def keep_mask(self, embeds, positions, modality, **settings) -> np.ndarray:
        """pyomnisift.sift on the media rows (text kept): bool [L]."""
        media = modality > 0
        keep = np.ones(len(modality), bool)
        keep[media] = pyomnisift.sift(embeds[media].numpy(), modality[media], positions[:, media].numpy(), **settings)
        return keep

    @torch.no_grad()
    def greedy(self, embeds, positions, max_tokens: int) -> list[int]:
        t = self.thinker
        next_pos = int(positions.max()) + 1
        out: list[int] = []
        for step in range(max_tokens):
            x = embeds[None]
            pos = positions[:, None, :]
            if out:
                x = torch.cat([x, t.get_input_embeddings()(torch.tensor([out]))], dim=1)
                extra = torch.arange(next_pos, next_pos + len(out))
                pos = torch.cat([pos, extra.view(1, 1, -1).expand(3, 1, -1)], dim=2)
            hidden = t.model(inputs_embeds=x, position_ids=pos, attention_mask=torch.ones(x.shape[:2], dtype=torch.long),
                             use_cache=False).last_hidden_state
            out.append(int(t.lm_head(hidden[0, -1]).argmax()))
        return out

"""Which model family a GGUF pair is, told from its headers: the LLM's architecture and the mmproj's
projector type per tower (as llama.cpp's converter writes them and clip.cpp reads them).

A pair pyomnisift does not serve is refused here, by name, before anything loads. Serving it anyway
would be a silent wrong answer: the sequence is built from one family's special tokens and M-RoPE
layout (each family here differs from the others in at least one: wrappers, time positions a
second, patch size, how audio goes with video, timestamps as text), and libmtmd would encode its
media without complaint.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

from ._errors import UnsupportedModelError
from ._template import QWEN3_CHAT_TEMPLATE, QWEN25_OMNI_CHAT_TEMPLATE, QWEN25_VL_CHAT_TEMPLATE

if TYPE_CHECKING:   # _model_info calls family_of from check_pair
    from ._model_info import LLMInfo, MmprojInfo


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    architectures: tuple        # the LLM's general.architecture
    vision: Optional[str]       # projector type of its vision tower (None: the family has none)
    audio: Optional[str]        # projector type of its audio tower
    windowed_audio: bool        # pyomnisift's own 2-s window tower encodes the audio (else libmtmd's 30-s)
    chat_template: str          # the released one: the fallback for a GGUF without one
    vision_bos: str = "<|vision_bos|>"   # the special tokens around an image or a video
    vision_eos: str = "<|vision_eos|>"
    audio_bos: str = "<|audio_bos|>"     # the special tokens around audio
    audio_eos: str = "<|audio_eos|>"
    positions_per_second: int = 25       # M-RoPE t ids per second of video (get_rope_index)
    patch: int = 28                      # pixels per merged vision token side (patch size x spatial merge)
    # The LLM takes the vision tower's deepstack features (Qwen3-VL's tower): rows are
    # n_embd x (1 + deepstack layers) wide. Qwen3-Omni's converter writes its thinker with
    # n_deepstack_layers 0 although transformers' thinker adds them: the count is taken from the
    # mmproj (clip.vision.is_deepstack_layers) and given to llama.cpp at load (a kv override).
    deepstack: bool = False
    audio_in_video: str = "chunks"       # a video's own audio: per 2-s chunk, or merged token by token ("tokens")
    timestamps: bool = False             # a video's grids each placed as an image after "<t seconds>" text

    def describe(self) -> str:
        towers = " / ".join(t for t in dict.fromkeys((self.vision, self.audio)) if t)
        return f"{self.name} ({'/'.join(self.architectures)} + {towers})"


SUPPORTED = (
    Family("Qwen2.5-Omni", ("qwen2vl",), vision="qwen2.5o", audio="qwen2.5o", windowed_audio=True,
           chat_template=QWEN25_OMNI_CHAT_TEMPLATE),
    # video without sound: position_id t = grid * seconds per grid * vision_config.tokens_per_second (2
    # in every released Qwen2.5-VL; the GGUF does not carry it)
    Family("Qwen2.5-VL", ("qwen2vl",), vision="qwen2.5vl_merger", audio=None, windowed_audio=False,
           chat_template=QWEN25_VL_CHAT_TEMPLATE, vision_bos="<|vision_start|>", vision_eos="<|vision_end|>",
           positions_per_second=2),
    Family("Qwen2-Audio", ("qwen2",), vision=None, audio="qwen2a", windowed_audio=False,
           chat_template=QWEN25_OMNI_CHAT_TEMPLATE),
    # libmtmd's towers, the audio through an audio-only copy of the mmproj (libmtmd refuses it whole:
    # _mtmd.audio_only); 32-pixel grids; a video's audio merged with it token by token at 13 position
    # ids a second (its processor's position_id_per_seconds), every wrapper at its own position.
    Family("Qwen3-Omni", ("qwen3vlmoe",), vision="qwen3vl_merger", audio="qwen3a", windowed_audio=False,
           chat_template=QWEN3_CHAT_TEMPLATE, vision_bos="<|vision_start|>", vision_eos="<|vision_end|>",
           audio_bos="<|audio_start|>", audio_eos="<|audio_end|>", positions_per_second=13, patch=32,
           deepstack=True, audio_in_video="tokens"),
    # video without sound: each frame grid after "<t seconds>" and its own wrappers, as text, placed
    # as an image (interleaved M-RoPE sections: llama.cpp's qwen3vl rope type); deepstack as
    # Qwen3-Omni's (its converter writes the count: the override is the same number)
    Family("Qwen3-VL", ("qwen3vl", "qwen3vlmoe"), vision="qwen3vl_merger", audio=None, windowed_audio=False,
           chat_template=QWEN3_CHAT_TEMPLATE, vision_bos="<|vision_start|>", vision_eos="<|vision_end|>",
           audio_bos="<|audio_start|>", audio_eos="<|audio_end|>", patch=32, deepstack=True, timestamps=True),
)
# a model without an mmproj (text): Qwen2.5-Omni's template as the fallback, as before families
TEXT_ONLY = SUPPORTED[0]

# Families whose pairs llama.cpp converts and runs but pyomnisift does not serve yet: (vision
# projector, audio projector) -> name, so that the error names what the user has.
KNOWN_UNSERVED = {
    ("qwen2vl_merger", None): "Qwen2-VL",
    (None, "qwen3a"): "Qwen3-Omni's audio tower (or Qwen3-ASR)",
}


def _served() -> str:
    return ", ".join(f.describe() for f in SUPPORTED)


def family_of(llm: LLMInfo, mm: MmprojInfo) -> Family:
    """The family of a model and its mmproj; raises UnsupportedModelError naming what the pair is."""
    towers = (mm.vision_projector, mm.audio_projector)
    if towers == (None, None):
        raise UnsupportedModelError(mm.path, "this mmproj has neither a vision nor an audio encoder")
    # an unserved family by its exact towers first: Qwen3-VL's vision-only mmproj would otherwise
    # pass for a part of Qwen3-Omni's
    name = KNOWN_UNSERVED.get(towers)
    # a family whose towers are exactly the pair's first (Qwen3-VL's vision-only mmproj is not a
    # part of Qwen3-Omni's), then one the pair has a part of (Qwen2.5-Omni's vision alone)
    exact = [f for f in SUPPORTED if (f.vision, f.audio) == towers]
    for family in (exact + [f for f in SUPPORTED if f not in exact]) if name is None else ():
        if all(t is None or t == f for t, f in zip(towers, (family.vision, family.audio))):
            if llm.architecture not in family.architectures:
                raise UnsupportedModelError(
                    mm.path, f"this mmproj is {family.name}'s, whose language model is a "
                             f"{'/'.join(family.architectures)!s} GGUF, but {llm.path} is {llm.architecture!r}: "
                             "pass the model it was converted with")
            return family
    what = " and ".join(f"a {kind} projector {t!r}" for kind, t in zip(("vision", "audio"), towers) if t)
    raise UnsupportedModelError(
        mm.path, (f"this is {name}'s mmproj ({what}, model {llm.architecture!r}), "
                  if name else f"this mmproj has {what or 'no tower'} (model {llm.architecture!r}), ")
        + f"a family pyomnisift does not serve; it serves {_served()}, and any GGUF without an mmproj "
          "as text. llama-cpp-python's own chat handlers run other families uncompressed")


__all__ = ["Family", "SUPPORTED", "TEXT_ONLY", "KNOWN_UNSERVED", "family_of"]

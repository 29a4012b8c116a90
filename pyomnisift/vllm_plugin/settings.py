"""The per-request OmniSIFT settings in vLLM: `mm_processor_kwargs` keys, server defaults, and how
they travel from the processor (which sizes the prompt) to the encoder (which selects the rows).

Names and defaults are pyomnisift's (`pyomnisift._settings.Settings`: video 0.33, audio 0.6, the
`anchor` selector), so retention tuned with `pyomnisift.Llama` means the same here. A request sets
them in `mm_processor_kwargs`; `vllm serve --mm-processor-kwargs '{"video_retention": 0.5}'` sets
the server's defaults (vLLM merges the two, the request winning).
"""

from __future__ import annotations

from typing import Any, Mapping

from .._settings import Settings

# mm_processor_kwargs key -> Settings field.
KEYS = {"video_retention": "video_retention", "audio_retention": "audio_retention",
        "audio_selector": "audio_selector", "sift_seed": "seed"}
# The selectors the plugin offers: "vgas" needs a head file, which the plugin does not load.
SELECTORS = ("anchor", "random", "none")


def settings_from(kwargs: Mapping[str, Any]) -> Settings:
    """The settings named in `kwargs` (merged mm_processor_kwargs) over pyomnisift's defaults;
    ValueError / TypeError naming a bad value."""
    settings = Settings().with_overrides({KEYS[k]: v for k, v in kwargs.items() if k in KEYS})
    if settings.audio_selector not in SELECTORS:
        raise ValueError(f"audio_selector {settings.audio_selector!r} is not available in the vLLM plugin "
                         f"(expected one of {', '.join(SELECTORS)})")
    return settings


def without_settings(kwargs: Mapping[str, Any]) -> dict:
    """`kwargs` less the OmniSIFT keys (what the Hugging Face processor gets)."""
    return {k: v for k, v in kwargs.items() if k not in KEYS}


def encode(settings: Settings) -> list:
    """The settings as one row of a float64 tensor (a video item's field): exact for retentions,
    the selector's index and seeds below 2**53."""
    if settings.seed >= 2**53:
        raise ValueError(f"sift_seed must be below 2**53 in the vLLM plugin, got {settings.seed}")
    return [settings.video_retention, settings.audio_retention, float(SELECTORS.index(settings.audio_selector)),
            float(settings.seed)]


def decode(row) -> dict:
    """pyomnisift.sift's keyword arguments from an `encode` row."""
    video, audio, selector, seed = (float(x) for x in row)
    return dict(video_retention=video, audio_retention=audio, audio_selector=SELECTORS[int(selector)],
                seed=int(seed))

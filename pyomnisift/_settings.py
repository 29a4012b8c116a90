"""The per-request OmniSIFT settings: validated once, here, then passed down unchanged.

Defaults are the paper's 35% setting (video 0.33, audio 0.6, the training-free ``anchor`` selector):
a user installs this library to compress; 1.0 everywhere turns compression off and gives the model's
exact sequence.

The rules a setting must follow (the audio selectors' names, the retention range) are defined by
cpp/omnisift.h and read from libomnisift here; the library, the command line and the server import
them from this module.
"""

from __future__ import annotations

import ctypes
import dataclasses
import numbers
from typing import Any, Mapping

from . import omnisift_cpp as C


def _read_selectors() -> dict:
    out = {}
    while (name := C.omnisift_audio_selector_name(len(out))) is not None:
        out[name.decode()] = len(out)
    return out


def _read_retention_range() -> tuple:
    lo, hi = ctypes.c_double(), ctypes.c_double()
    C.omnisift_retention_range(ctypes.byref(lo), ctypes.byref(hi))
    return lo.value, hi.value


AUDIO_SELECTORS = _read_selectors()          # name -> enum omnisift_audio_selector value
RETENTION_MIN, RETENTION_MAX = _read_retention_range()


def check_retention(name: str, value) -> float:
    """`value` as a float; TypeError / ValueError naming `name` when it is no retention."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [{RETENTION_MIN:g}, {RETENTION_MAX:g}], "
                        f"got {type(value).__name__}")
    value = float(value)
    if not RETENTION_MIN <= value <= RETENTION_MAX:
        raise ValueError(f"{name} = {value} is not in [{RETENTION_MIN:g}, {RETENTION_MAX:g}]")
    return value


def with_pruning_rate(video_retention, video_pruning_rate):
    """video_retention, or vLLM's alias video_pruning_rate (the fraction of video tokens pruned) as
    video_retention = 1 - rate; None when neither is given. Both given: ValueError."""
    if video_pruning_rate is None:
        return video_retention
    if video_retention is not None:
        raise ValueError("give video_retention or video_pruning_rate (vLLM's name for 1 - video_retention), "
                         "not both")
    # 12 decimals: 1 - 0.65 is 0.35000000000000003 in binary, and drop counts floor n * (1 - r)
    return round(1.0 - check_retention("video_pruning_rate", video_pruning_rate), 12)


def check_audio_selector(value, name: str = "audio_selector") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in AUDIO_SELECTORS:
        raise ValueError(f"unknown {name} {value!r} (expected one of {', '.join(AUDIO_SELECTORS)})")
    return value

DEFAULT_VIDEO_RETENTION = 0.33
DEFAULT_AUDIO_RETENTION = 0.6


@dataclasses.dataclass(frozen=True)
class Settings:
    video_retention: float = DEFAULT_VIDEO_RETENTION
    audio_retention: float = DEFAULT_AUDIO_RETENTION
    image_retention: float = 1.0
    audio_selector: str = "anchor"
    seed: int = 0                  # the random selector's seed
    video_fps: float = 2.0         # frames sampled per second of video
    fit_context: bool = False      # lower video, then audio retention until the prompt fits n_ctx

    @property
    def is_off(self) -> bool:
        return self.video_retention >= 1.0 and self.audio_retention >= 1.0 and self.image_retention >= 1.0

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Settings":
        """These settings with the non-None values of `overrides` (names of the fields), validated."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unexpected OmniSIFT setting(s): {', '.join(sorted(unknown))}")
        values = {k: v for k, v in overrides.items() if v is not None}
        return validate(dataclasses.replace(self, **values)) if values else self


def validate(s: Settings) -> Settings:
    """The settings with retentions as floats; raises TypeError / ValueError naming the bad one."""
    retentions = {k: check_retention(k, getattr(s, k)) for k in ("video_retention", "audio_retention", "image_retention")}
    check_audio_selector(s.audio_selector)
    if isinstance(s.seed, bool) or not isinstance(s.seed, numbers.Integral) or not 0 <= int(s.seed) < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {s.seed!r}")
    if isinstance(s.video_fps, bool) or not isinstance(s.video_fps, numbers.Real) or not 0 < float(s.video_fps) <= 60:
        raise ValueError(f"video_fps must be a number in (0, 60], got {s.video_fps!r}")
    if not isinstance(s.fit_context, bool):
        raise TypeError(f"fit_context must be True or False, got {s.fit_context!r}")
    return dataclasses.replace(s, **retentions, seed=int(s.seed), video_fps=float(s.video_fps))

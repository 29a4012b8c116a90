"""Media decoding and sampling: where a part's bytes come from (``source``), the per-request
decoding budget (``limits``), PyAV/PIL decoding (``decode``) and Qwen's frame-sampling rules
(``sampling``). The package exports the two settings the public API takes."""

from .limits import MediaLimits
from .source import MediaPolicy

__all__ = ["MediaLimits", "MediaPolicy"]

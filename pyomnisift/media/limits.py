"""How much decoding one request may cause, and FFmpeg kept to media containers.

Limits are checked from what the container's header says before anything is decoded (a frame size,
a duration), and again on what is actually decoded (headers lie): a 16000x16000 PNG-in-MOV is
refused from its sample description, an hour-long silent FLAC from its STREAMINFO, without decoding
either. `MediaLimits` is the configuration (pyomnisift.Llama's `media_limits`, the server's flags);
`MediaBudget` is one request's account against it, shared by all its media items.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from .._errors import ModelFileError

# FFmpeg demuxers that read one self-contained media file. Everything else is refused before it is
# opened: playlists and references to other files (concat, hls, dash, image2 patterns, ...),
# network and RTP formats (sdp, rtp, rtsp, ...), devices, and raw codec guesses. Names match any
# of a demuxer's names (FFmpeg's av_match_list): "mov" is mov,mp4,m4a,3gp,3g2,mj2.
DEMUXERS = ("mov", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "ogg", "wav", "w64", "mp3", "flac",
            "aac", "asf", "gif", "aiff", "caf", "amr", "ac3", "eac3", "au", "wv", "ivf", "nut", "mxf", "dv")
FORMAT_WHITELIST = ",".join(DEMUXERS)
# In-memory sources use no protocol at all; files only "file" (the top-level open of a path).
PROTOCOLS_INLINE = "none"
PROTOCOLS_FILE = "file"


def allowed_format(name: str) -> bool:
    """Whether an opened container's format (its comma-separated names) is one of DEMUXERS."""
    return any(n in DEMUXERS for n in (name or "").split(","))


@dataclasses.dataclass(frozen=True)
class MediaLimits:
    """Bounds on the decoding work of one request (None: no bound).

    ``max_frame_pixels``: one image or video frame (default 7680x4320, 8K UHD), from the header,
    then per decoded frame. ``max_video_pixels``: pixels decoded over all videos of a request
    (default 1e11: about 25 minutes of 1080p at 30 fps decoded frame by frame). ``max_media_seconds``:
    one audio or video item (default 4 hours), from the header, then as packets or samples are read.
    """

    max_frame_pixels: Optional[int] = 7680 * 4320
    max_video_pixels: Optional[float] = 1e11
    max_media_seconds: Optional[float] = 4 * 3600.0

    def __post_init__(self):
        for name in ("max_frame_pixels", "max_video_pixels", "max_media_seconds"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
                raise ValueError(f"{name} must be a positive number or None, got {v!r}")


DEFAULT_LIMITS = MediaLimits()


class MediaBudget:
    """One request's decoding account: its limits and the video pixels decoded so far."""

    def __init__(self, limits: Optional[MediaLimits] = None):
        self.limits = limits or DEFAULT_LIMITS
        self.video_pixels = 0

    def check_frame(self, name: str, width: int, height: int, what: str = "a video frame") -> None:
        limit = self.limits.max_frame_pixels
        if limit is not None and width * height > limit:
            raise ModelFileError(name, f"{what} of {width}x{height} ({width * height:,} pixels) is over the "
                                 f"limit of {int(limit):,} pixels per frame (max_frame_pixels): not decoded")

    def plan_video(self, name: str, frames: int, width: int, height: int) -> None:
        """Before decoding: the sampled frames alone must fit what is left of the request's budget."""
        limit = self.limits.max_video_pixels
        need = frames * width * height
        if limit is not None and self.video_pixels + need > limit:
            raise ModelFileError(name, f"{frames} frames of {width}x{height} need {need:,} decoded pixels; the "
                                 f"request's budget (max_video_pixels) is {int(limit):,} and "
                                 f"{self.video_pixels:,} are spent: not decoded")

    def spend_frame(self, name: str, width: int, height: int) -> None:
        """A frame was decoded: its size checked, its pixels counted against the request's budget."""
        self.check_frame(name, width, height)
        self.video_pixels += width * height
        limit = self.limits.max_video_pixels
        if limit is not None and self.video_pixels > limit:
            raise ModelFileError(name, f"decoding stopped after {self.video_pixels:,} pixels, over the "
                                 f"request's budget of {int(limit):,} (max_video_pixels)")

    def check_seconds(self, name: str, seconds: float, how: str) -> None:
        limit = self.limits.max_media_seconds
        if limit is not None and seconds > limit:
            raise ModelFileError(name, f"lasts {seconds:.1f} s ({how}), over the limit of {limit:g} s per "
                                 "media item (max_media_seconds)")

"""Media decoding with PyAV: video frames sampled and sized as Qwen's own preprocessing
(``qwen-omni-utils``, ``qwen_omni_utils.v2_5``) samples them, audio as 16 kHz mono float32 (whole or
streamed in blocks), images as RGB. Every failure to read a file is a ModelFileError naming it.

Frames and audio blocks are yielded lazily, so a long video is never held whole in memory.

Video, in short (the rules themselves are in ``sampling.py``):

* ``probe_video`` counts the stream's frames by demuxing its packets (no decoding), as the
  reference's default reader, decord, does (``VideoReader`` indexes every packet; ``len(vr)`` is
  that count). A header that claims more frames or seconds than the stream holds, or fewer (a
  Matroska/WebM/AVI duration or frame count that lies), therefore changes nothing. One exception:
  mp4/mov index every sample in their header, so an mp4 holding fewer packets than its index lists
  is a cut file (a partial download with its index first) and raises ModelFileError; decord fails
  on it too (av_read_frame returns invalid data; the reference then tries torchvision's reader).
  ``video_fps`` is the stream's average frame rate (``avg_frame_rate``, what decord's
  ``get_avg_fps`` returns; the mp4 demuxer derives it from the sample table, others from the header
  or the first frames).
* Frames are chosen by index (display order), evenly over the stream, not by timestamp: with
  variable frame rate the reference (decord) does exactly that, and so do we. Not checked here
  (not installable without system FFmpeg libraries): torchcodec, which the reference prefers when
  it is installed, also counts frames from a scan of the stream, but as we read its metadata code
  takes the rate from the scanned timestamps (frames / (last end - first start)) where decord takes
  ``avg_frame_rate``; the two can differ on variable-rate streams, and nframes with them.
  torchvision's reader (the reference's last fallback, gone from torchvision 0.24 on) decoded
  everything and took the header rate.
* Rotation: a display matrix (phone videos) is applied, so frames reach the model upright, as
  players show them and as the reference's decord does (it rotates by the stream's rotation, 90 /
  180 / 270 degrees, and reports the rotated size; the size is then chosen from the rotated
  height and width). Mirroring in the matrix and angles that are not right angles are ignored,
  as decord ignores them. Sample aspect ratio is not applied (neither does the reference).
* The reference's reader decodes the chosen frames only (it seeks); ``iter_video_frames`` seeks
  to key frames likewise when that skips more than 32 frames, else decodes in order.
"""

from __future__ import annotations

import array
import dataclasses
import io
import os
import re
import warnings
from typing import Iterator, Optional

import numpy as np

from .._errors import ModelFileError
from .limits import FORMAT_WHITELIST, PROTOCOLS_FILE, PROTOCOLS_INLINE, MediaBudget, allowed_format
from .sampling import FPS, FRAME_FACTOR, MIN_FRAMES, PATCH_FACTOR, VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, plan_sampling

SAMPLE_RATE = 16000
_SEEK_GAIN = 32              # frames a seek must skip to be worth it (threaded decoders restart slowly)
_AUDIO_PROBE_PACKETS = 64     # packets of the audio track tried at probing before calling it undecodable


def _name(source) -> str:
    return "<in-memory media>" if hasattr(source, "read") else os.fspath(source)


def _ready(source, what: str):
    """A path that exists and is not empty, or a binary file-like object rewound (one source may be
    read several times). A BytesIO (a data: URI) gets a reader of its own over the same bytes (no
    copy), so that its audio and its frames can be streamed at the same time."""
    if isinstance(source, io.BytesIO):
        data = source.getvalue()
        if not data:
            raise ModelFileError(_name(source), f"is empty (0 bytes), not a {what} file")
        return io.BytesIO(data)
    if hasattr(source, "read"):
        source.seek(0, os.SEEK_END)
        size = source.tell()
        source.seek(0)
    else:
        source = os.fspath(source)
        if not os.path.exists(source):
            raise FileNotFoundError(f"{what} not found: {source}")
        size = os.path.getsize(source) if os.path.isfile(source) else 1
    if size == 0:
        raise ModelFileError(_name(source), f"is empty (0 bytes), not a {what} file")
    return source


def _ffmpeg_reason(e: Exception) -> str:
    """FFmpeg's reason without the file name PyAV appends (messages must not carry server paths)."""
    return getattr(e, "strerror", None) or str(e)


def _open(source, what: str):
    """The container, opened with FFmpeg limited to media demuxers (no playlists, network or
    pattern formats: FORMAT_WHITELIST) and protocols (a path: "file"; bytes: none)."""
    import av

    name = _name(source)
    source = _ready(source, what)
    protocols = PROTOCOLS_INLINE if hasattr(source, "read") else PROTOCOLS_FILE
    try:
        c = av.open(source, container_options={"format_whitelist": FORMAT_WHITELIST,
                                               "protocol_whitelist": protocols})
    except av.FFmpegError as e:
        if getattr(e, "errno", None) == 22:     # EINVAL: FFmpeg found no demuxer on the whitelist
            raise ModelFileError(name, f"is not a media file pyomnisift reads as {what} (FFmpeg found no "
                                 "audio/video container it allows; playlists, stream descriptions and "
                                 "network formats are refused)") from None
        raise ModelFileError(name, f"cannot be decoded as {what}: {_ffmpeg_reason(e)}") from None
    except (ValueError, OSError) as e:
        raise ModelFileError(name, f"cannot be decoded as {what}: {e}") from None
    if not allowed_format(c.format.name):    # in case a PyAV build ignored the whitelist option
        c.close()
        raise ModelFileError(name, f"is a {c.format.name} container, which pyomnisift does not read")
    return c


def _check_audio_duration(path, name: str, header_seconds: float, budget: MediaBudget) -> None:
    """Before decoding: a header claiming more than max_media_seconds is checked against the
    track's packets (demuxed, not decoded: an hour of FLAC in milliseconds), which win over the
    header as everywhere here; a header that lies long about a short clip changes nothing."""
    import av

    limit = budget.limits.max_media_seconds
    if limit is None or header_seconds <= limit:
        return
    with _open(path, "audio") as c:
        st = c.streams.audio[0]
        tb = float(st.time_base or 0)
        first = end = None
        try:
            for pkt in c.demux(st):
                if pkt.pts is None or not tb:
                    continue
                first = pkt.pts if first is None else min(first, pkt.pts)
                end = max(end or pkt.pts, pkt.pts + (pkt.duration or 0))
                budget.check_seconds(name, (end - first) * tb, "from its packets")
        except av.FFmpegError:
            pass                  # a damaged tail: decoding reports it, and counts what it decodes


def _video_stream(container, name: str):
    """The video stream decord would read (FFmpeg's best), cover art (attached pictures) excluded."""
    import av

    streams = [s for s in container.streams.video
               if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))]
    if not streams:
        art = " (only cover art)" if container.streams.video else ""
        hint = "; pass it as input_audio" if container.streams.audio else ""
        raise ModelFileError(name, f"has no video stream{art}{hint}")
    try:
        best = container.streams.best("video")
    except Exception:   # noqa: BLE001 - any failure: fall back to the first stream
        best = None
    return best if best in streams else streams[0]


def _upright_turns(rotation) -> int:
    """Quarter turns counter-clockwise that make a frame upright, from PyAV's ``frame.rotation``
    (the display matrix's counter-clockwise angle, in [-180, 180]); 0 for other angles."""
    if not rotation:
        return 0
    q = round(rotation / 90)
    return q % 4 if abs(rotation - 90 * q) < 1 else 0


@dataclasses.dataclass(frozen=True, eq=False)
class VideoInfo:
    """A video, probed: what the model will get from it, as ``qwen-omni-utils`` samples it.

    The pipeline times each grid (pair of frames) as ``seconds_per_grid = 2 / sample_fps``, the
    reference's ``second_per_grid_ts``."""
    path: str
    duration: float          # seconds of video: the packets' timestamps (first start to last end)
    n_frames: int            # frames in the stream, counted by demuxing its packets (not the header)
    n_sampled: int           # frames sampled (the reference's nframes, a multiple of 2)
    height: int              # frame size for the model, upright, after smart_resize
    width: int
    has_audio: bool          # an audio stream whose first packets decode
    source_fps: float        # the stream's average frame rate (the reference's video_fps)
    sample_fps: float        # n_sampled / n_frames * source_fps
    frame_indices: np.ndarray  # int64 [n_sampled], read-only: indices into the stream's frames
    max_pixels: float        # the per-frame pixel budget the size was chosen within
    rotation: int            # degrees counter-clockwise applied to make frames upright: 0/90/180/270
    source_height: int       # the stream's size as displayed (after rotation), before resizing
    source_width: int
    audio_error: Optional[str] = None   # set when an audio stream exists but cannot be decoded

    @property
    def seconds_per_grid(self) -> float:
        return FRAME_FACTOR / self.sample_fps

    @property
    def n_grids(self) -> int:
        return self.n_sampled // FRAME_FACTOR


def probe_video(path, fps: float = FPS, min_pixels: int = VIDEO_MIN_PIXELS,
                max_pixels: Optional[float] = VIDEO_MAX_PIXELS, *, min_frames: int = MIN_FRAMES,
                max_frames: Optional[int] = None, total_pixels: Optional[float] = None,
                budget: Optional[MediaBudget] = None, factor: int = PATCH_FACTOR) -> VideoInfo:
    """Frame count, indices, sample fps and size of a video as ``qwen_omni_utils.v2_5.fetch_video``
    gives them (its ``fps``, ``min_frames``, ``max_frames``, ``min_pixels``, ``max_pixels`` and
    ``total_pixels`` keys; ``max_frames=None`` is its default ``min(768, frames)``, ``total_pixels=
    None`` is ``MODEL_SEQ_LEN * 28 * 28 * 0.9`` from the environment, 128000 by default). `factor`:
    its ``image_patch_size * 2`` (28; Qwen3's 32, with min / max / total pixels to match).

    One pass over the file: every video packet is demuxed and counted (nothing is decoded but the
    first frame, for its rotation and to fail early on an undecodable stream), and the first packets
    of the audio track are decoded to tell whether it is usable (``has_audio``; ``audio_error`` says
    why not). Raises ModelFileError naming the file: not a media file, empty, truncated or corrupt,
    no video stream ("...; pass it as input_audio" when it has sound), fewer than 2 frames, or over
    the limits of `budget` (frame size from the header before the first frame is decoded, duration
    from the header and from the packets as they are demuxed, the sampled frames' pixels).
    """
    import av

    name = _name(path)
    budget = budget or MediaBudget()
    with _open(path, "video") as c:
        vs = _video_stream(c, name)
        cc = vs.codec_context          # None for a codec FFmpeg does not know (then decoding fails)
        if cc is not None:
            budget.check_frame(name, cc.width or 0, cc.height or 0)
        tb = float(vs.time_base) if vs.time_base else 0.0
        aus = c.streams.audio[0] if c.streams.audio else None
        audio_error = None
        audio_ok = False
        audio_packets = 0
        count, first, first_pts, end_pts = 0, None, None, None
        try:
            for pkt in c.demux(*(s for s in (vs, aus) if s is not None)):
                if pkt.stream is aus:
                    if audio_ok or audio_error is not None:
                        continue
                    try:
                        if pkt.size:
                            audio_packets += 1
                        if aus.decode(pkt if pkt.size else None):
                            audio_ok = True
                        elif audio_packets >= _AUDIO_PROBE_PACKETS:
                            audio_error = f"no audio decoded from its first {audio_packets} packets"
                    except (av.FFmpegError, ValueError, RuntimeError) as e:
                        audio_error = f"its audio track cannot be decoded: {e}"
                    continue
                if not pkt.size:            # the demuxer's closing flush packet
                    if first is None:
                        first = _first_frame(vs, None, name, budget)
                    continue
                count += 1
                if pkt.pts is not None:
                    first_pts = pkt.pts if first_pts is None else min(first_pts, pkt.pts)
                    end = pkt.pts + (pkt.duration or 0)
                    end_pts = end if end_pts is None else max(end_pts, end)
                    if tb and count % 256 == 0:
                        budget.check_seconds(name, (end_pts - first_pts) * tb, "from its packets")
                if first is None:
                    first = _first_frame(vs, pkt, name, budget)
        except av.FFmpegError as e:
            raise ModelFileError(name, f"video stream is corrupt or truncated after {count} frames: {e}") from e
        if aus is not None and not audio_ok and audio_error is None:
            audio_error = "its audio track holds no decodable audio"
        if count == 0 or first is None:
            raise ModelFileError(name, "video stream holds no decodable frame")
        listed = vs.frames or 0
        if listed > count and _indexed_container(c):
            # mp4/mov list every sample in the moov atom: fewer packets than listed is a cut file
            # (the reference's decord fails on it too: av_read_frame returns invalid data).
            raise ModelFileError(name, f"is truncated: its index lists {listed} video frames, the file "
                                 f"holds {count}")
        rate = 0.0
        for r in (vs.average_rate, vs.guessed_rate):
            if r:
                rate = float(r)
                break
        duration = (end_pts - first_pts) * tb if end_pts is not None and tb else 0.0
        if rate <= 0:   # the reference cannot sample such a stream (its rate is NaN); we use the timestamps
            if duration <= 0:
                raise ModelFileError(name, "video stream has neither a frame rate nor timestamps")
            rate = count / duration
        if duration <= 0:
            duration = count / rate
        budget.check_seconds(name, duration, "from its packets")
        turns = _upright_turns(first.rotation)
        ch = vs.codec_context.height or first.height
        cw = vs.codec_context.width or first.width
        if turns % 2:
            ch, cw = cw, ch
        if count < FRAME_FACTOR:
            raise ModelFileError(name, f"video has {count} frame(s); at least {FRAME_FACTOR} are needed")
        try:
            plan = plan_sampling(count, rate, ch, cw, fps=fps, min_frames=min_frames, max_frames=max_frames,
                                 min_pixels=min_pixels, max_pixels=max_pixels, total_pixels=total_pixels,
                                 factor=factor)
        except ValueError as e:
            raise ModelFileError(name, f"cannot be sampled: {e}") from e
        budget.plan_video(name, plan.nframes, first.width, first.height)
        return VideoInfo(name, duration, count, plan.nframes, plan.height, plan.width, audio_ok, rate,
                         plan.sample_fps, plan.frame_indices, plan.max_pixels, 90 * turns, ch, cw,
                         audio_error)


def _indexed_container(container) -> bool:
    """Containers whose header indexes every sample (mp4, mov, m4a, 3gp): there a frame count above
    the packets the file holds means the file was cut; elsewhere (avi, mkv, ...) the header's count
    or duration is only a claim, and the packets win."""
    return "mp4" in container.format.name or "mov" in container.format.name


def _first_frame(stream, packet, name, budget: MediaBudget):
    import av

    try:
        frames = stream.decode(packet)
    except av.FFmpegError as e:
        raise ModelFileError(name, f"video stream cannot be decoded: {_ffmpeg_reason(e)}") from None
    for f in frames:
        budget.check_frame(name, f.width, f.height)
    return frames[0] if frames else None


def iter_video_frames(path, fps: float = FPS, min_pixels: int = VIDEO_MIN_PIXELS,
                      max_pixels: Optional[float] = VIDEO_MAX_PIXELS, *, min_frames: int = MIN_FRAMES,
                      max_frames: Optional[int] = None, total_pixels: Optional[float] = None,
                      info: Optional[VideoInfo] = None, seek: bool = True,
                      budget: Optional[MediaBudget] = None) -> Iterator[np.ndarray]:
    """Yields the sampled frames (``info.frame_indices`` of ``probe_video``; pass `info` to skip
    probing again) as uint8 RGB [height, width, 3], upright, resized with bicubic filtering; an
    index repeats when the source has fewer frames than asked for.

    With `seek` (the default), decoding jumps to the key frame before a wanted frame whenever
    that skips more than 32 frames (decord seeks likewise), so a long video costs about a GOP per
    sampled frame instead of every frame; frames are identified by their timestamps among the
    stream's packets. Where that cannot be done exactly (packets without timestamps, duplicate
    timestamps, a seek that lands past the frame), it falls back to decoding every frame in order,
    which `seek=False` asks for outright; both give the same frames.

    Should the decoder give fewer frames than the stream has packets (corrupt packets it drops),
    the last good frame stands in for the missing ones, as decord substitutes it, with a warning.
    A decoding error is a ModelFileError naming the file; so is a decoded frame over `budget`'s
    frame size, or decoding past its request-wide pixel budget (every decoded frame counts).
    """
    budget = budget or MediaBudget()
    if info is None:
        info = probe_video(path, fps, min_pixels, max_pixels, min_frames=min_frames,
                           max_frames=max_frames, total_pixels=total_pixels, budget=budget)
    name = _name(path)
    convert = _frame_converter(info)
    done = 0
    if seek:
        try:
            for frame in _iter_seeking(path, name, info, convert, budget):
                yield frame
                done += 1
            return
        except _CannotSeek:
            pass
    for k, frame in enumerate(_iter_in_order(path, name, info, convert, budget)):
        if k >= done:
            yield frame


def _frame_converter(info: VideoInfo):
    from PIL import Image

    turns = info.rotation // 90
    # Resize to the pre-rotation shape, then turn (cheaper than turning the full-size frame).
    size = (info.height, info.width) if turns % 2 else (info.width, info.height)
    transpose = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}

    def convert(frame) -> np.ndarray:
        img = frame.to_image().resize(size, Image.BICUBIC)
        if turns:
            img = img.transpose(transpose[turns])
        return np.asarray(img, dtype=np.uint8)
    return convert


class _CannotSeek(Exception):
    pass


def _iter_seeking(path, name, info: VideoInfo, convert,
                  budget: Optional[MediaBudget] = None) -> Iterator[np.ndarray]:
    """The sampled frames, seeking to key frames; raises _CannotSeek (before or after yielding some)
    where frames cannot be told apart by timestamp."""
    import av

    wanted = info.frame_indices
    budget = budget or MediaBudget()
    with _open(path, "video") as c:
        vs = _video_stream(c, name)
        pts, keys = array.array("q"), array.array("q")    # compact: 8 bytes a frame
        try:
            for pkt in c.demux(vs):
                if not pkt.size:
                    continue
                if pkt.pts is None:
                    raise _CannotSeek
                if pkt.is_keyframe:
                    keys.append(pkt.pts)
                pts.append(pkt.pts)
        except av.FFmpegError as e:
            raise ModelFileError(name, f"video stream is corrupt or truncated: {e}") from e
        in_order = np.sort(np.frombuffer(pts, np.int64))
        del pts
        if len(in_order) != info.n_frames or np.any(np.diff(in_order) == 0) or not len(keys):
            raise _CannotSeek
        key_at = np.sort(np.searchsorted(in_order, np.frombuffer(keys, np.int64)))  # key frames, display order

        def index_of(p):
            i = int(np.searchsorted(in_order, p)) if p is not None else len(in_order)
            return i if i < len(in_order) and in_order[i] == p else None
        vs.thread_type = "AUTO"
        frames, pos, prev, last = None, 0, None, None
        try:
            for t in wanted:
                t = int(t)
                if t != prev:
                    k = int(key_at[np.searchsorted(key_at, t, side="right") - 1]) if key_at[0] <= t else 0
                    if frames is None or k > pos + _SEEK_GAIN:
                        c.seek(int(in_order[k]), stream=vs, backward=True, any_frame=False)
                        vs.codec_context.flush_buffers()
                        frames = (f for packet in c.demux(vs) for f in packet.decode())
                    for frame in frames:
                        budget.spend_frame(name, frame.width, frame.height)
                        idx = index_of(frame.pts)
                        if idx is None or idx > t:
                            raise _CannotSeek
                        pos = idx + 1
                        if idx == t:
                            last = convert(frame)
                            break
                    else:
                        raise _CannotSeek    # the stream ended early: the in-order path handles it
                    prev = t
                yield last
        except av.FFmpegError as e:
            raise ModelFileError(name, f"video cannot be decoded near frame {prev} of {info.n_frames}: "
                                 f"{_ffmpeg_reason(e)}") from None


def _iter_in_order(path, name, info: VideoInfo, convert,
                   budget: Optional[MediaBudget] = None) -> Iterator[np.ndarray]:
    """The sampled frames, decoding every frame of the stream in order."""
    import av

    wanted = info.frame_indices
    budget = budget or MediaBudget()
    n = len(wanted)
    j, i, last = 0, -1, None
    with _open(path, "video") as c:
        stream = _video_stream(c, name)
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(c.decode(stream)):
                budget.spend_frame(name, frame.width, frame.height)
                if wanted[j] != i:
                    continue
                last = convert(frame)
                while j < n and wanted[j] == i:
                    yield last
                    j += 1
                if j == n:
                    return
        except av.FFmpegError as e:
            raise ModelFileError(name, f"video cannot be decoded at frame {i + 2} of {info.n_frames}: "
                                 f"{_ffmpeg_reason(e)}") from None
    if last is None:
        raise ModelFileError(name, "no video frame could be decoded")
    warnings.warn(f"{name}: the decoder gave {i + 1} frames of the {info.n_frames} packets; the last "
                  f"decoded frame stands in for the {n - j} sampled frame(s) past it", RuntimeWarning,
                  stacklevel=3)
    for _ in range(n - j):
        yield last


def _resampled_blocks(path, sample_rate: int, budget: Optional[MediaBudget] = None) -> Iterator[np.ndarray]:
    """The first audio stream, decoded and resampled to mono float32, in the resampler's own blocks.
    Its duration is checked against `budget` from the header before decoding, then as it decodes."""
    import av

    name = _name(path)
    budget = budget or MediaBudget()
    limit = budget.limits.max_media_seconds
    with _open(path, "audio") as c:
        if not c.streams.audio:
            raise ModelFileError(name, "has no audio stream")
        st = c.streams.audio[0]
        header = max(float(st.duration * st.time_base) if st.duration and st.time_base else 0.0,
                     c.duration / 1e6 if c.duration else 0.0)      # AV_TIME_BASE
        _check_audio_duration(path, name, header, budget)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        n = 0
        try:
            for frame in c.decode(st):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1)
                    n += len(block)
                    if limit is not None and n > (limit + 1) * sample_rate:
                        budget.check_seconds(name, n / sample_rate, "decoded so far")
                    yield block
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
        except av.FFmpegError as e:
            raise ModelFileError(name, f"audio cannot be decoded: {_ffmpeg_reason(e)}") from None


def read_audio(path, sample_rate: int = SAMPLE_RATE, budget: Optional[MediaBudget] = None) -> np.ndarray:
    """The first audio stream of a file (audio or video), as mono float32 at `sample_rate`."""
    parts = list(_resampled_blocks(path, sample_rate, budget))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def iter_audio(path, block_samples: int, sample_rate: int = SAMPLE_RATE,
               budget: Optional[MediaBudget] = None) -> Iterator[np.ndarray]:
    """``read_audio(path)`` in consecutive float32 blocks of `block_samples` (the last one shorter,
    never empty): the same decoder and resampler in one pass, so the blocks concatenated equal
    ``read_audio`` exactly, and memory is a block whatever the length."""
    if block_samples <= 0:
        raise ValueError(f"block_samples must be positive, got {block_samples}")
    buf = np.empty(block_samples, np.float32)
    fill = 0
    for part in _resampled_blocks(path, sample_rate, budget):
        while len(part):
            take = min(block_samples - fill, len(part))
            buf[fill:fill + take] = part[:take]
            fill += take
            part = part[take:]
            if fill == block_samples:
                yield buf.copy()
                fill = 0
    if fill:
        yield buf[:fill].copy()


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def read_image(path, budget: Optional[MediaBudget] = None) -> np.ndarray:
    """An image file as uint8 RGB [height, width, 3]. An image over `budget`'s max_frame_pixels (from
    its header, before decoding) or over PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``
    x 2, 179 MP by default) is a ModelFileError naming the file and its pixel count."""
    from PIL import Image, UnidentifiedImageError

    name = _name(path)
    budget = budget or MediaBudget()
    path = _ready(path, "image")
    try:
        with Image.open(path) as img:
            budget.check_frame(name, img.width, img.height, "an image")
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ModelFileError:
        raise
    except Image.DecompressionBombError as e:
        m = _BOMB_PIXELS.search(str(e))
        count = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
        raise ModelFileError(name, f"has {count}, over PIL's decompression-bomb limit of "
                             f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} (2 x PIL.Image.MAX_IMAGE_PIXELS): "
                             "not decoded") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        # SyntaxError: PIL's plugins raise it for a malformed file while decoding it (a PNG chunk
        # that is not one: "broken PNG file"), not only while identifying it (found by fuzzing)
        raise ModelFileError(name, f"is not an image PIL can read: {e}") from e

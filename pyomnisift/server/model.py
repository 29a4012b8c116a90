"""The one model the server holds, the lock that serializes requests on it, and the media policy
(what a request may point at) applied before anything reaches the model."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import tempfile
import urllib.parse
from typing import Optional

from .settings import ModelSettings, ServerSettings


class MediaError(ValueError):
    """A content part the server refuses: the message names the part."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(f"{param}: {message}")


AUDIO_FORMATS = {"wav", "mp3", "flac", "ogg", "oga", "opus", "m4a", "aac", "webm", "mp4"}


def _check_base64(param: str, payload: str) -> None:
    _decode_base64(param, payload)


def _decode_base64(param: str, payload: str) -> bytes:
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MediaError(param, f"data is not valid base64 ({e})") from None
    if not data:
        raise MediaError(param, "data is empty")
    return data


def check_url(param: str, url: str, allowed_dir: Optional[str], spool_dir: Optional[str] = None) -> str:
    """The url the model may read: a data: URI (checked; with spool_dir, its bytes written to a file
    there and that path returned), or a local path under allowed_dir (made absolute). Remote URLs
    and other paths are refused."""
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or ";base64" not in header:
            raise MediaError(param, "a data: URI must be base64 (data:<mime>;base64,...)")
        data = _decode_base64(param, payload)
        if spool_dir is None:
            return url
        fd, path = tempfile.mkstemp(dir=spool_dir, prefix="media-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path
    if url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url) and not re.match(r"^[a-zA-Z]:[\\/]", url):
        raise MediaError(param, f"remote URLs are not fetched ({url.split(':', 1)[0]}:); send the bytes as a "
                         "data: URI")
    else:
        path = url
    if allowed_dir is None:
        raise MediaError(param, "local paths are refused: send a data: URI, or start the server with "
                         "--allowed_media_dir DIR")
    root = os.path.realpath(allowed_dir)
    real = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, real]) != root:
        raise MediaError(param, f"{path} is outside the allowed media directory")
    if not os.path.isfile(real):
        raise MediaError(param, f"no such file in the allowed media directory: {path}")
    return real


def check_messages(messages: list, allowed_dir: Optional[str], spool_dir: Optional[str] = None) -> list:
    """Plain dicts for Llama.create_chat_completion, every media reference checked. With spool_dir,
    video data: URIs are handed to the model as files written there (default: passed as they are)."""
    out = []
    for i, msg in enumerate(messages):
        m = msg.model_dump(exclude_none=True)
        if isinstance(msg.content, list):
            parts = []
            for j, part in enumerate(msg.content):
                p = part.model_dump(exclude_none=True)
                param = f"messages[{i}].content[{j}]"
                if part.type in ("image_url", "video_url"):
                    ref = getattr(part, part.type)
                    url = ref if isinstance(ref, str) else ref.url
                    p[part.type] = {"url": check_url(f"{param}.{part.type}.url", url, allowed_dir,
                                                     spool_dir if part.type == "video_url" else None)}
                elif part.type == "input_audio":
                    data, fmt = part.input_audio.data, part.input_audio.format.lower()
                    if data.startswith(("data:", "file://", "/")):
                        data = check_url(f"{param}.input_audio.data", data, allowed_dir)
                        if not data.startswith("data:"):
                            data = "file://" + data
                    else:
                        if fmt not in AUDIO_FORMATS:
                            raise MediaError(f"{param}.input_audio.format", f"unknown audio format {fmt!r} "
                                             f"(one of {', '.join(sorted(AUDIO_FORMATS))})")
                        _check_base64(f"{param}.input_audio.data", data)
                    p["input_audio"] = {"data": data, "format": fmt}
                parts.append(p)
            m["content"] = parts
        out.append(m)
    return out


class OmniModel:
    """pyomnisift.Llama, loaded once; `lock` serializes requests (one context, one KV cache)."""

    def __init__(self, settings: ModelSettings, server: ServerSettings):
        import pyomnisift

        self.settings = settings
        self.alias = settings.model_alias or os.path.basename(settings.model)
        kwargs = dict(n_ctx=settings.n_ctx, n_gpu_layers=settings.n_gpu_layers, n_threads=settings.n_threads,
                      n_batch=settings.n_batch, verbose=settings.verbose, video_fps=settings.video_fps)
        if settings.flash_attn:
            kwargs["flash_attn"] = True
        if settings.logits_all:
            kwargs["logits_all"] = True     # logprobs (llama-cpp-python keeps every position's logits)
        if settings.seed is not None:
            kwargs["seed"] = settings.seed
        for key in ("video_retention", "audio_retention", "image_retention", "audio_selector", "sift_head"):
            value = getattr(settings, key)
            if value is not None:
                kwargs[key] = value
        self.llama = pyomnisift.Llama(settings.model, settings.mmproj, **kwargs)
        self.lock = asyncio.Lock()
        self.waiting = 0           # requests queued behind the lock (interrupt_requests)
        self.streams: list = []    # one record per finished stream: chunks sent, how it ended

    def close(self) -> None:
        llama, self.llama = self.llama, None
        if llama is not None:
            llama.close()

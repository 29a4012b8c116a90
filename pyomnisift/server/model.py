"""The one model the server holds, the lock that serializes requests on it, and the checks a request
passes before it waits for the model: its media sources resolved under the server's policy
(pyomnisift.media.source) and its size within the server's limits."""

from __future__ import annotations

import asyncio
import os

from ..media.source import MediaPolicy, MediaSourceError, resolve_audio, resolve_url
from .settings import ModelSettings, ServerSettings


class MediaError(ValueError):
    """A content part the server refuses: the message names the part."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(f"{param}: {message}")


AUDIO_FORMATS = {"wav", "mp3", "flac", "ogg", "oga", "opus", "m4a", "aac", "webm", "mp4"}


def _resolved(param: str, resolve, *args):
    try:
        return resolve(*args)
    except MediaSourceError as e:
        message, prefix = str(e), param + ": "
        raise MediaError(param, message[len(prefix):] if message.startswith(prefix) else message) from None


def check_messages(messages: list, settings: ServerSettings) -> list:
    """Plain dicts for Llama.create_chat_completion, every media source resolved once under the
    server's policy (media.source: data URI bytes decoded, local files only under
    --allowed_media_dir), and the request's size within the limits (messages, media parts, text),
    all before the request waits for the model."""
    policy = MediaPolicy.server(settings.allowed_media_dir)
    if len(messages) > settings.max_messages:
        raise MediaError("messages", f"{len(messages)} messages, over the server's limit of "
                         f"{settings.max_messages} (--max_messages)")
    out, n_media, n_chars = [], 0, 0
    for i, msg in enumerate(messages):
        m = msg.model_dump(exclude_none=True)
        if isinstance(msg.content, str):
            n_chars += len(msg.content)
        elif isinstance(msg.content, list):
            parts = []
            for j, part in enumerate(msg.content):
                p = part.model_dump(exclude_none=True)
                param = f"messages[{i}].content[{j}]"
                if part.type == "text":
                    n_chars += len(part.text)
                else:
                    n_media += 1
                    if n_media > settings.max_media_parts:
                        raise MediaError(param, f"more than {settings.max_media_parts} media parts in one "
                                         "request (--max_media_parts)")
                if part.type in ("image_url", "video_url"):
                    ref = getattr(part, part.type)
                    url = ref if isinstance(ref, str) else ref.url
                    what = f"{param}.{part.type}.url"
                    p[part.type] = {"url": _resolved(what, resolve_url, url, what, policy)}
                elif part.type == "input_audio":
                    data, fmt = part.input_audio.data, part.input_audio.format.lower()
                    if fmt not in AUDIO_FORMATS:
                        raise MediaError(f"{param}.input_audio.format", f"unknown audio format {fmt!r} "
                                         f"(one of {', '.join(sorted(AUDIO_FORMATS))})")
                    what = f"{param}.input_audio.data"
                    p["input_audio"] = {"data": _resolved(what, resolve_audio, data, fmt, what, policy),
                                        "format": fmt}
                parts.append(p)
            m["content"] = parts
        if n_chars > settings.max_text_chars:
            raise MediaError(f"messages[{i}]", f"the messages hold more than {settings.max_text_chars} "
                             "characters of text (--max_text_chars)")
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
        for key in ("video_retention", "video_pruning_rate", "audio_retention", "image_retention", "audio_selector",
                    "sift_head"):
            value = getattr(settings, key)
            if value is not None:
                kwargs[key] = value
        self.llama = pyomnisift.Llama(settings.model, settings.mmproj, **kwargs,
                                      media_policy=MediaPolicy.server(server.allowed_media_dir),
                                      media_limits=server.media_limits(), cache=_media_cache(settings))
        self.lock = asyncio.Lock()
        self.waiting = 0           # requests queued behind the lock (interrupt_requests)
        self.streams: list = []    # one record per finished stream: chunks sent, how it ended

    async def acquire(self) -> None:
        """Waits for the model lock, counted in `waiting` meanwhile (interrupt_requests reads it)."""
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1

    def close(self) -> None:
        llama, self.llama = self.llama, None
        if llama is not None:
            llama.close()


def _media_cache(settings: ModelSettings):
    if not settings.cache:
        return None
    import pyomnisift

    if settings.cache_type == "ram":
        return pyomnisift.MediaRAMCache(settings.cache_size)
    from .._converter import default_cache_dir

    return pyomnisift.MediaDiskCache(settings.cache_dir or default_cache_dir() / "media-cache", settings.cache_size)

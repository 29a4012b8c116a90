"""OpenAI-style chat messages -> the text pieces and media items of one prompt.

Media parts become sentinels inside the message text, the model's chat template renders the
messages, and the rendered string is split back at the sentinels. Any template that renders string
content works this way, and the media wrappers are the model's own special tokens, written here:
<|vision_bos|> / <|vision_eos|> around images and video, <|audio_bos|> / <|audio_eos|> around audio
(video with sound: <|vision_bos|><|audio_bos|> ... <|audio_eos|><|vision_eos|>, as the reference).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import os
import re
import secrets
import urllib.parse
from typing import Any, Union

VISION_BOS, VISION_EOS = "<|vision_bos|>", "<|vision_eos|>"
AUDIO_BOS, AUDIO_EOS = "<|audio_bos|>", "<|audio_eos|>"

# Marks that no message can contain: a per-process nonce (a user who types a mark's text gets text).
_NONCE = secrets.token_hex(8)
_MEDIA = f"\x00omnisift-media-{_NONCE}-{{}}\x00"
_MEDIA_SPLIT = re.compile(f"\x00omnisift-media-{_NONCE}-\\d+\x00")
# Text that users type stays text: llama-cpp-python tokenizes the rendered prompt with special=True,
# so a "<|im_end|>" typed in a message would become the control token (ending the turn early, or
# forging one). Such spans (anything shaped like a special token, <|...|>) are wrapped in these
# marks before the template renders, and tokenize_text() tokenizes what they hold with
# special=False. Text without such spans is tokenized exactly as llama-cpp-python tokenizes it.
_LIT_BEGIN, _LIT_END = f"\x00omnisift-text-{_NONCE}\x01", f"\x01omnisift-text-{_NONCE}\x00"
_LIT_SPLIT = re.compile(re.escape(_LIT_BEGIN) + "(.*?)" + re.escape(_LIT_END), re.S)
_SPECIAL_LIKE = re.compile(r"<\|[^<>|\s]{1,64}\|>")

MediaSource = Union[str, io.BytesIO]  # a local path, or the bytes of a data: URI


@dataclasses.dataclass
class MediaItem:
    kind: str            # "image" | "audio" | "video"
    source: MediaSource
    label: str           # what the user gave, for error messages (data URIs shortened)


@dataclasses.dataclass
class Prompt:
    pieces: list[str]         # text before media 0, between 0 and 1, ..., after the last (len = media + 1)
    media: list[MediaItem]


def resolve_url(url: str, kind: str) -> tuple[MediaSource, str]:
    """A local path, file:// URL or data: URI -> something PyAV / PIL can open, and a label."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"{kind} url must be a non-empty string, got {url!r}")
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or ";base64" not in header:
            raise ValueError(f"{kind} data URI must be base64-encoded (data:<mime>;base64,...)")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"{kind} data URI is not valid base64: {e}") from e
        if not data:
            raise ValueError(f"{kind} data URI is empty")
        return io.BytesIO(data), f"{header},... ({len(data)} bytes)"
    if url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
        raise ValueError(f"{kind} url {url!r}: only local paths, file:// URLs and data: URIs are read "
                         "(pyomnisift fetches nothing from the network)")
    else:
        path = url
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{kind} file not found: {path}")
    return path, path


def _media_item(part: dict) -> MediaItem:
    kind = part.get("type")
    if kind == "image_url":
        ref = part.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        src, label = resolve_url(url, "image")
        return MediaItem("image", src, label)
    if kind == "video_url":
        ref = part.get("video_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        src, label = resolve_url(url, "video")
        return MediaItem("video", src, label)
    if kind == "input_audio":
        ref = part.get("input_audio") or {}
        if not isinstance(ref, dict) or "data" not in ref:
            raise ValueError("input_audio part needs {'data': <base64>, 'format': 'wav'|'mp3'|...}")
        data = ref["data"]
        if isinstance(data, str) and (data.startswith("data:") or data.startswith("file://") or os.path.isfile(data)):
            src, label = resolve_url(data, "audio")
        else:
            fmt = ref.get("format", "wav")
            src, label = resolve_url(f"data:audio/{fmt};base64,{data}", "audio")
        return MediaItem("audio", src, label)
    raise ValueError(f"unsupported content part type {kind!r} (supported: text, image_url, "
                     "input_audio, video_url)")


def protect(text: str) -> str:
    """Message text with every special-token-shaped span marked as literal text."""
    return _SPECIAL_LIKE.sub(lambda m: _LIT_BEGIN + m.group(0) + _LIT_END, text)


def tokenize_text(tokenize, text: str, add_bos: bool) -> list:
    """Token ids of a rendered piece: `tokenize(bytes, add_bos, special)` is llama.tokenize; spans
    marked by protect() are tokenized with special=False (as text), the rest with special=True."""
    parts = _LIT_SPLIT.split(text)
    if len(parts) == 1:
        return tokenize(text.encode("utf-8"), add_bos, True)
    ids: list = []
    for i, part in enumerate(parts):       # odd indices: the literal spans
        if part:
            ids += tokenize(part.encode("utf-8"), add_bos and not ids, i % 2 == 0)
    return ids or tokenize(b"", add_bos, True)


def build_prompt(messages: list[dict[str, Any]], render) -> Prompt:
    """`render(messages) -> str` applies the chat template to messages with string content."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    media: list[MediaItem] = []
    flat = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg:
            raise ValueError(f"message {i} must be a dict with a 'role'")
        content = msg.get("content")
        if content is None or isinstance(content, str):
            flat.append(dict(msg, content=protect(content or "")))
            continue
        if not isinstance(content, list):
            raise ValueError(f"message {i}: content must be a string or a list of parts")
        text = []
        for part in content:
            if not isinstance(part, dict):
                raise ValueError(f"message {i}: each content part must be a dict, got {type(part).__name__}")
            if part.get("type") == "text":
                text.append(protect(str(part.get("text", ""))))
                continue
            item = _media_item(part)
            bos, eos = (AUDIO_BOS, AUDIO_EOS) if item.kind == "audio" else (VISION_BOS, VISION_EOS)
            text.append(bos + _MEDIA.format(len(media)) + eos)
            media.append(item)
        flat.append(dict(msg, content="".join(text)))
    rendered = render(flat)
    pieces = _MEDIA_SPLIT.split(rendered)
    if len(pieces) != len(media) + 1:
        raise ValueError("the chat template dropped or repeated message content; media cannot be placed")
    return Prompt(pieces, media)

"""OpenAI-style chat messages -> the text pieces and media items of one prompt.

Media parts become sentinels inside the message text, the model's chat template renders the
messages, and the rendered string is split back at the sentinels. Any template that renders string
content works this way, and the media wrappers are the model's own special tokens, written here:
<|vision_bos|> / <|vision_eos|> around images and video (the family's: Qwen2.5-VL's <|vision_start|> /
<|vision_end|>), <|audio_bos|> / <|audio_eos|> around audio (video with sound: <|vision_bos|><|audio_bos|>
... <|audio_eos|><|vision_eos|>, as the reference).
"""

from __future__ import annotations

import dataclasses
import io
import re
import secrets
from typing import Any, Optional, Union

from .media.limits import MediaBudget, MediaLimits
from .media.source import LIBRARY, MediaPolicy, resolve_audio, resolve_url

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
    budget: MediaBudget = dataclasses.field(default_factory=MediaBudget)   # the request's, shared


@dataclasses.dataclass
class Prompt:
    pieces: list[str]         # text before media 0, between 0 and 1, ..., after the last (len = media + 1)
    media: list[MediaItem]


def _media_item(part: dict, policy: MediaPolicy, budget: MediaBudget) -> MediaItem:
    kind = part.get("type")
    if kind in ("image_url", "video_url"):
        what = kind[:-4]
        ref = part.get(kind)
        url = ref.get("url") if isinstance(ref, dict) else ref
        r = resolve_url(url, what, policy)
        return MediaItem(what, r.open_source(), r.label, budget)
    if kind == "input_audio":
        ref = part.get("input_audio") or {}
        if not isinstance(ref, dict) or "data" not in ref:
            raise ValueError("input_audio part needs {'data': <base64>, 'format': 'wav'|'mp3'|...}")
        r = resolve_audio(ref["data"], str(ref.get("format", "wav")), "audio", policy)
        return MediaItem("audio", r.open_source(), r.label, budget)
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


def build_prompt(messages: list[dict[str, Any]], render, policy: MediaPolicy = LIBRARY,
                 limits: Optional[MediaLimits] = None, vision_wrappers: tuple = (VISION_BOS, VISION_EOS),
                 audio_wrappers: tuple = (AUDIO_BOS, AUDIO_EOS)) -> Prompt:
    """`render(messages) -> str` applies the chat template to messages with string content; media
    sources are resolved under `policy` (media.source), and their decoding shares one budget
    within `limits` (media.limits). `vision_wrappers`: the model family's special tokens around an
    image or a video (Qwen2.5-VL's <|vision_start|> / <|vision_end|>), `audio_wrappers` around audio
    (Qwen3-Omni's <|audio_start|> / <|audio_end|>)."""
    budget = MediaBudget(limits)
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
            item = _media_item(part, policy, budget)
            bos, eos = audio_wrappers if item.kind == "audio" else vision_wrappers
            text.append(bos + _MEDIA.format(len(media)) + eos)
            media.append(item)
        flat.append(dict(msg, content="".join(text)))
    rendered = render(flat)
    pieces = _MEDIA_SPLIT.split(rendered)
    if len(pieces) != len(media) + 1:
        raise ValueError("the chat template dropped or repeated message content; media cannot be placed")
    return Prompt(pieces, media)

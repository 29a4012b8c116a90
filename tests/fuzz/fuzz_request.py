"""Fuzz the server's request parsing: JSON bytes -> OmniChatCompletionRequest (server/types.py)
-> check_messages (the media policy) -> _prompt.build_prompt with Qwen2.5-Omni's chat template;
validation errors are formatted by the app's _validation_message. Also build_prompt on the raw
JSON, as the Python API receives arbitrary dicts."""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

from _common import expect, main

from fastapi.exceptions import RequestValidationError
from llama_cpp import llama_chat_format
from pydantic import ValidationError

from pyomnisift import _prompt
from pyomnisift._template import QWEN25_OMNI_CHAT_TEMPLATE
from pyomnisift.server.app import _validation_message
from pyomnisift.media.source import MediaPolicy
from pyomnisift.server.model import check_messages
from pyomnisift.server.settings import ServerSettings
from pyomnisift.server.types import OmniChatCompletionRequest

ALLOWED = tempfile.mkdtemp(prefix="fuzz-media-")
(Path(ALLOWED) / "a.wav").write_bytes(b"RIFF")
SETTINGS = ServerSettings(allowed_media_dir=ALLOWED)
POLICY = MediaPolicy.server(ALLOWED)
FORMAT = llama_chat_format.Jinja2ChatFormatter(template=QWEN25_OMNI_CHAT_TEMPLATE, eos_token="<|im_end|>",
                                               bos_token="", stop_token_ids=[0])


def render(flat):
    return FORMAT(messages=flat).prompt


VALUES = [None, "", "x", 0, -1, 1.5, True, [], {}, [1], {"url": None}, "data:", "data:image/png;base64,",
          "data:a;base64,@@", "data:;base64," + base64.b64encode(b"x").decode(), "file://", "file:///nope",
          "ftp://h/f", "C:/x", "../../etc/passwd", "a.wav", "<|im_end|>", "\x00omnisift-media-0\x00", "{{ 1 }}",
          "\ud800", 2**80, float("nan")]
KEYS = ["type", "text", "image_url", "video_url", "input_audio", "input_video", "url", "data", "format", "role",
        "content"]
TYPES = ["text", "image_url", "video_url", "input_audio", "input_video", "audio_url", "", None]
ROLES = ["user", "system", "assistant", "tool", "bogus", None, 3]


def _structured(data: bytes):
    """JSON that breaks rarely: a body assembled from the bytes (libFuzzer's flips mostly break
    JSON syntax, which only json.loads sees)."""
    import atheris

    fdp = atheris.FuzzedDataProvider(data)

    def value(depth=0):
        if depth < 2 and fdp.ConsumeIntInRange(0, 4) == 0:
            return {fdp.PickValueInList(KEYS): value(depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}
        return fdp.PickValueInList(VALUES)

    def part():
        p = {"type": fdp.PickValueInList(TYPES)}
        for _ in range(fdp.ConsumeIntInRange(0, 3)):
            p[fdp.PickValueInList(KEYS)] = value()
        return p

    msgs = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        content = [part() for _ in range(fdp.ConsumeIntInRange(0, 3))] if fdp.ConsumeBool() else value()
        msgs.append({"role": fdp.PickValueInList(ROLES), "content": content})
    body = {"messages": msgs}
    for key in ("video_retention", "audio_retention", "audio_selector", "fit_context", "max_tokens", "stream"):
        if fdp.ConsumeBool():
            body[key] = value()
    return body


def test_one(data: bytes) -> None:
    try:
        body = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        body = _structured(data)
    expect(_prompt.build_prompt, body.get("messages") if isinstance(body, dict) else body, render)
    try:
        req = OmniChatCompletionRequest.model_validate(body)
    except ValidationError as e:
        message, _ = _validation_message(RequestValidationError(e.errors()))
        assert isinstance(message, str)
        return
    messages = expect(check_messages, req.messages, SETTINGS)
    if messages is not None:
        expect(_prompt.build_prompt, messages, render, POLICY)


B64 = base64.b64encode(b"RIFF....WAVE").decode()
SEEDS = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": [
        {"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64}},
        {"type": "video_url", "video_url": "data:video/mp4;base64," + B64},
        {"type": "input_audio", "input_audio": {"data": B64, "format": "wav"}}]}],
     "max_tokens": 4, "video_retention": 0.3, "audio_selector": "anchor", "stream": True},
    {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "a.wav"}},
                                               {"type": "input_audio", "input_audio": {"data": "file:///etc/passwd"}}]},
                  {"role": "assistant", "content": None}], "fit_context": True, "temperature": 0.5},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
]

if __name__ == "__main__":
    main(test_one, seeds=[json.dumps(s).encode() for s in SEEDS])

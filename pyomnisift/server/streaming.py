"""Server-sent events for a generation that holds the model lock: how a stream starts, ends and is
cut short, for /v1/chat/completions and /v1/completions alike.

- Bad input raises before the first chunk, so it is still a plain 4xx JSON response.
- Every stream that is not dropped by its client ends with a chunk that has a finish_reason, then
  `data: [DONE]`: a waiting request (interrupt_requests) stops the generation at its next token and
  its own last chunk is sent; an error mid-stream becomes a last chunk with finish_reason "error"
  and an `error` object in OpenAI's error shape (the openai client raises it as an APIError).
- With stream_options.include_usage, OpenAI's extra last chunk: no choices, the usage.
- `should_stop` ends the generation at its next token (polled per token): llama-cpp-python may
  generate many tokens before it yields a chunk (bytes that are no UTF-8 yet, text that could start a
  stop string), and a generator cannot be closed while it runs in its thread. Client disconnects and
  waiting requests are watched while a chunk is being computed, not only between chunks.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Callable, Iterator, Optional

import anyio
from fastapi import Request
from fastapi.responses import Response
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool


def dumps(obj) -> str:
    """JSON of a llama-cpp-python response: its logprobs are numpy float32 scalars."""
    return json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o))


def json_response(obj) -> Response:
    return Response(dumps(obj), media_type="application/json")


async def result_watching_client(request: Request, stop: dict, work):
    """The result of `work` (a thread's); while it runs, a client that leaves sets stop["stop"]
    (polled per token), and the thread is still awaited so that the model is released idle."""
    pending = asyncio.ensure_future(work)
    while True:
        try:
            done, _ = await asyncio.wait({pending}, timeout=0.2)
        except BaseException:
            stop["stop"] = True
            with anyio.CancelScope(shield=True):
                await asyncio.wait({pending})
            raise
        if done:
            return pending.result()
        if not stop["stop"] and await request.is_disconnected():
            stop["stop"] = True


class _LockedEventSource(EventSourceResponse):
    """An SSE response that runs `on_close` however it ends (even if it never starts streaming)."""

    def __init__(self, *args, on_close, **kwargs):
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def locked_stream(request: Request, model, start: Callable[[Callable[[], bool]], Iterator[dict]], *,
                        include_usage: bool, error_body: Callable[[BaseException], dict],
                        on_usage: Optional[Callable[[dict], None]] = None) -> EventSourceResponse:
    """The response for a stream on `model`, whose lock the caller holds (released when the stream
    ends). `start(should_stop)` returns the chunk iterator (run in a thread); `error_body(exc)` is
    the OpenAI error object for an exception mid-stream; `on_usage(usage)` sees the last usage."""
    settings = request.app.state.server_settings
    state = {"closed": False, "iterator": None, "chunks": 0, "end": "disconnect", "stop": False}

    def close() -> None:
        if state["closed"]:
            return
        state["closed"] = True
        it = state["iterator"]
        try:
            if it is not None and hasattr(it, "close"):
                it.close()         # GeneratorExit inside the generation loop: it stops there
        finally:
            model.streams.append({"chunks": state["chunks"], "end": state["end"], "time": time.time()})
            model.lock.release()

    _end = object()
    try:
        state["iterator"] = it = await run_in_threadpool(lambda: iter(start(lambda: state["stop"])))
        first = await run_in_threadpool(next, it, _end)
    except BaseException:
        state["end"] = "error"
        close()
        raise

    def interrupt_wanted() -> bool:
        return bool(settings.interrupt_requests and model.waiting > 0)

    async def next_watching():
        """The next chunk; while it is computed, a client that leaves or a request that waits
        (interrupt_requests) stops the generation at its next token."""
        pending = asyncio.ensure_future(run_in_threadpool(next, it, _end))
        while True:
            try:
                done, _ = await asyncio.wait({pending}, timeout=0.2)
            except BaseException:
                # Cancelled (sse-starlette saw the client leave): stop the generation and wait for
                # its thread, so that the lock is not released while the model still computes.
                state["end"], state["stop"] = "disconnect", True
                with anyio.CancelScope(shield=True):
                    await asyncio.wait({pending})
                raise
            if done:
                return pending.result()
            if not state["stop"]:
                if await request.is_disconnected():
                    state["end"], state["stop"] = "disconnect", True
                elif interrupt_wanted():
                    state["end"], state["stop"] = "interrupted", True

    async def events():
        chunk, last, usage = first, None, None
        while chunk is not _end:
            state["chunks"] += 1
            last = chunk
            usage = chunk.get("usage") or usage
            yield {"data": dumps(chunk)}
            if await request.is_disconnected():
                state["end"] = "disconnect"
                return
            if not state["stop"] and interrupt_wanted():
                state["end"], state["stop"] = "interrupted", True   # its last chunk still comes
            try:
                chunk = await next_watching()
            except Exception as exc:
                if state["end"] == "disconnect" and state["stop"]:
                    return
                state["end"] = "error"
                yield {"data": dumps(_error_chunk(last, error_body(exc)))}
                yield {"data": "[DONE]"}
                return
            if state["stop"] and state["end"] == "disconnect":
                return
        if state["end"] != "interrupted":
            state["end"] = "done"
        if usage is not None and on_usage is not None:
            on_usage(usage)
        if include_usage and usage is not None and last is not None:
            yield {"data": dumps({**{k: last[k] for k in ("id", "object", "created", "model") if k in last},
                                       "choices": [], "usage": usage})}
        yield {"data": "[DONE]"}

    return _LockedEventSource(events(), on_close=close, sep="\n",
                              ping_message_factory=request.app.state.ping_message_factory)


def _error_chunk(last: Optional[dict], error: dict) -> dict:
    base = {k: last[k] for k in ("id", "object", "created", "model") if last and k in last}
    chat = base.get("object") == "chat.completion.chunk"
    choice = {"index": 0, "finish_reason": "error", **({"delta": {}} if chat else {"text": "", "logprobs": None})}
    return {**base, "choices": [choice], "error": error}

"""What one client can make the server do, bounded and refused early.

* `LimitSettings`: the flags (each also an environment variable, as every server setting).
* `RequestGuard` (ASGI middleware, outermost): the API key is checked from the headers before a
  byte of the body is read; then the body is read within `max_body_bytes` (413), within
  `body_timeout` seconds (408: a client that trickles its body does not hold a connection and a
  buffer forever), and within `max_inflight_body_bytes` summed over all requests being received or
  served (503 with Retry-After: many large bodies at once cannot exhaust memory).
* `uvicorn_options`: uvicorn's own caps: concurrent connections (`limit_concurrency`, 503 beyond),
  idle keep-alive, and a deadline for a request's head (`header_timeout`: a client that sends
  its headers a byte at a time is disconnected).
"""

from __future__ import annotations

import hmac
from typing import Optional

import anyio
from llama_cpp.server.errors import ErrorResponse
from pydantic import Field
from pydantic_settings import BaseSettings
from starlette.responses import JSONResponse


class LimitSettings(BaseSettings):
    """Bounds on a request: its body, its messages, the media decoding it causes, its connection."""

    max_body_bytes: int = Field(default=100 * 1024 * 1024, ge=1,
                                description="Largest request body accepted, in bytes (413 beyond).")
    max_inflight_body_bytes: int = Field(default=256 * 1024 * 1024, ge=1,
                                         description="Request body bytes held at once over all requests "
                                         "(503 beyond).")
    body_timeout: float = Field(default=60.0, gt=0, description="Seconds a client may take to send a "
                                "request body (408 beyond).")
    header_timeout: float = Field(default=10.0, gt=0, description="Seconds a client may take to send a "
                                  "request's head (the connection is closed beyond).")
    timeout_keep_alive: int = Field(default=5, ge=1, description="Seconds an idle keep-alive connection "
                                    "is kept.")
    limit_concurrency: Optional[int] = Field(default=64, ge=1, description="Concurrent connections "
                                             "(503 beyond).")
    max_messages: int = Field(default=256, ge=1, description="Messages in one request.")
    max_media_parts: int = Field(default=16, ge=0, description="Image, audio and video parts in one request.")
    max_text_chars: int = Field(default=1_000_000, ge=1, description="Characters of text over all messages "
                                "of a request.")
    max_frame_pixels: Optional[int] = Field(default=7680 * 4320, ge=1, description="Pixels of one image or "
                                            "video frame, from the header before decoding, then per frame.")
    max_video_pixels: Optional[float] = Field(default=1e11, gt=0, description="Pixels decoded over all "
                                              "videos of one request.")
    max_media_seconds: Optional[float] = Field(default=1800.0, gt=0, description="Duration of one audio or "
                                               "video item, from its header before decoding, then as read.")

    def media_limits(self):
        from ..media.limits import MediaLimits

        return MediaLimits(self.max_frame_pixels, self.max_video_pixels, self.max_media_seconds)


def _error(status: int, message: str, type_: str, code: Optional[str], headers: Optional[dict] = None):
    return JSONResponse({"error": ErrorResponse(message=message, type=type_, param=None, code=code)},
                        status_code=status, headers=headers)


class _Inflight:
    """Body bytes held by the requests in progress."""

    def __init__(self, cap: int):
        self.cap, self.held = cap, 0

    def take(self, n: int) -> bool:
        if self.held + n > self.cap:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


class RequestGuard:
    """The API key before the body; the body within its size, its time and the in-flight cap."""

    def __init__(self, app, settings):
        self.app = app
        self.settings = settings
        self.inflight = _Inflight(settings.max_inflight_body_bytes)
        root = settings.root_path or ""
        self.public = {"/health", root + "/health"}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.settings
        if s.api_key is not None and scope["method"] != "OPTIONS" and scope["path"] not in self.public:
            if not self._authorized(scope, s.api_key):
                return await _error(401, "Invalid API key", "authentication_error", "invalid_api_key")(
                    scope, receive, send)
        declared = 0
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = max(0, int(value))
                except ValueError:
                    declared = 0
        if declared > s.max_body_bytes:
            return await self._too_large(scope, receive, send)
        held = 0
        try:
            if declared and not self.inflight.take(declared):
                return await self._busy(scope, receive, send)
            held = declared
            chunks, total, more = [], 0, True
            try:
                with anyio.fail_after(s.body_timeout):
                    while more:
                        message = await receive()
                        if message["type"] != "http.request":
                            return                     # the client left before its body was in
                        body = message.get("body", b"")
                        total += len(body)
                        if total > s.max_body_bytes:
                            return await self._too_large(scope, receive, send)
                        if total > held:
                            if not self.inflight.take(total - held):
                                return await self._busy(scope, receive, send)
                            held = total
                        chunks.append(body)
                        more = message.get("more_body", False)
            except TimeoutError:
                return await _error(408, f"the request body was not received within {s.body_timeout:g} s "
                                    "(--body_timeout)", "invalid_request_error", "request_timeout",
                                    {"Connection": "close"})(scope, receive, send)
            body = b"".join(chunks)
            del chunks
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()     # then the real channel: disconnects reach the app

            await self.app(scope, replay, send)
        finally:
            self.inflight.give(held)

    @staticmethod
    def _authorized(scope, key: str) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(),
                                                                          key.encode())
        return False

    async def _too_large(self, scope, receive, send):
        n = self.settings.max_body_bytes
        return await _error(413, f"request body is larger than the server's limit of {n} bytes "
                            "(--max_body_bytes)", "invalid_request_error", "request_too_large",
                            {"Connection": "close"})(scope, receive, send)

    async def _busy(self, scope, receive, send):
        return await _error(503, "the server holds as many request bodies as it may "
                            "(--max_inflight_body_bytes); retry later", "server_error", "server_busy",
                            {"Retry-After": "1", "Connection": "close"})(scope, receive, send)


def _timed_h11(header_timeout: float):
    """uvicorn's h11 protocol, closing a connection whose request head is not complete within
    `header_timeout` seconds of the connection (or of the previous response)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def _arm(self):
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout, self._head_timeout)

        def _disarm(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self):
            self._head_timer = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

        def data_received(self, data):
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()             # a request head arrived: the body has its own timeout

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

    return TimedH11Protocol


def uvicorn_options(settings) -> dict:
    """uvicorn.run / uvicorn.Config keywords for the connection-level limits of `settings`."""
    return dict(limit_concurrency=settings.limit_concurrency, timeout_keep_alive=settings.timeout_keep_alive,
                http=_timed_h11(settings.header_timeout))

"""FastAPI app: /v1/chat/completions (JSON or SSE), /v1/models, /health.

Built from llama_cpp.server's pieces: its ServerSettings and Bearer-key check, its RouteErrorHandler
(OpenAI-shaped errors; here bad input is a 400 instead of a 500), its request model (extended with
omni parts in types.py) and sse-starlette for streaming. One model; an asyncio lock serializes the
requests on it. A stream stops generating at its next token when its client disconnects, or, with
interrupt_requests (llama_cpp.server's setting, on by default), when another request waits; both are
watched while a chunk is being computed, not only between chunks.
"""

from __future__ import annotations

import asyncio
import json
import time

import anyio
from typing import Optional

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from llama_cpp.server.errors import ErrorResponse, RouteErrorHandler
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .limits import RequestGuard
from .model import MediaError, OmniModel, check_messages, public_message
from .settings import ModelSettings, ServerSettings, Settings
from .types import OMNISIFT_FIELDS, OmniChatCompletionRequest

# Fields of llama_cpp.server's request that pyomnisift.Llama.create_chat_completion does not take.
_NOT_PASSED = {"model", "messages", "n", "user", "logit_bias_type", "min_tokens", "stream"}


def _error(status_code: int, message: str, type_: str = "invalid_request_error", param: Optional[str] = None,
           code: Optional[str] = None) -> JSONResponse:
    return JSONResponse({"error": ErrorResponse(message=message, type=type_, param=param, code=code)},
                        status_code=status_code)


def _is_bad_input(error: Exception) -> bool:
    from .._errors import OmniSiftError

    return isinstance(error, (ValueError, TypeError, FileNotFoundError, OmniSiftError, NotImplementedError))


class OmniRouteErrorHandler(RouteErrorHandler):
    """llama_cpp.server's handler; a request the model refuses (bad media, bad settings) is a 400."""

    def error_message_wrapper(self, error, body=None, settings=None):
        if _is_bad_input(error):
            param = error.param if isinstance(error, MediaError) else None
            message = public_message(str(error), settings) if settings is not None else str(error)
            return 400, ErrorResponse(message=message, type="invalid_request_error", param=param, code=None)
        return super().error_message_wrapper(error, body)

    def get_route_handler(self):
        # llama_cpp.server's handler re-reads the body as JSON on any error (a 500 for malformed JSON,
        # and request validation errors never reach FastAPI's handler); these pass through here.
        original = APIRoute.get_route_handler(self)

        async def handler(request: Request):
            start = time.perf_counter()
            try:
                response = await original(request)
            except (StarletteHTTPException, RequestValidationError):
                raise
            except Exception as exc:
                status_code, error = self.error_message_wrapper(exc, settings=request.app.state.server_settings)
                return JSONResponse({"error": error}, status_code=status_code)
            response.headers["openai-processing-ms"] = f"{int((time.perf_counter() - start) * 1000)}"
            return response

        return handler


router = APIRouter(route_class=OmniRouteErrorHandler)
bearer_scheme = HTTPBearer(auto_error=False)


def get_model(request: Request) -> OmniModel:
    model = getattr(request.app.state, "model", None)
    if model is None or model.llama is None:
        raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail="the model is not loaded")
    return model


async def authenticate(request: Request, authorization=Depends(bearer_scheme)):
    key = request.app.state.server_settings.api_key
    if key is None:
        return True
    if authorization and authorization.credentials == key:
        return authorization.credentials
    raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail="Invalid API key")


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


def _call_kwargs(body: OmniChatCompletionRequest, messages: list) -> dict:
    kwargs = {k: v for k, v in body.model_dump(exclude_unset=True).items() if k not in _NOT_PASSED}
    for key in OMNISIFT_FIELDS:
        if kwargs.get(key) is None:
            kwargs.pop(key, None)
    kwargs["messages"] = messages
    return kwargs


@router.post("/v1/chat/completions", dependencies=[Depends(authenticate)], summary="Chat")
async def create_chat_completion(request: Request, body: OmniChatCompletionRequest,
                                 model: OmniModel = Depends(get_model)):
    settings: ServerSettings = request.app.state.server_settings
    messages = check_messages(body.messages, settings)
    kwargs = _call_kwargs(body, messages)
    llama = model.llama
    model.waiting += 1
    try:
        await model.lock.acquire()
    finally:
        model.waiting -= 1
    if not body.stream:
        # Generated on a thread; a client that leaves meanwhile stops it at its next token.
        stop = {"stop": False}
        kwargs["should_stop"] = lambda: stop["stop"]
        try:
            return await _watching(request, stop, run_in_threadpool(lambda: llama.create_chat_completion(**kwargs)))
        finally:
            model.lock.release()

    # Streaming: bad input raises before the first chunk, so it is still a plain 4xx response.
    # `stop` ends the generation at its next token (should_stop, polled per token): llama-cpp-python
    # may generate many tokens before it yields a chunk (bytes that are no UTF-8 yet, text that
    # could start a stop string), and a generator cannot be closed while it runs in its thread.
    # The soak test found a dropped stream generating for minutes that way, holding the model.
    state = {"closed": False, "iterator": None, "chunks": 0, "end": "disconnect", "stop": False}
    kwargs["should_stop"] = lambda: state["stop"]

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
        state["iterator"] = it = await run_in_threadpool(
            lambda: iter(llama.create_chat_completion(stream=True, **kwargs)))
        first = await run_in_threadpool(next, it, _end)
    except BaseException:
        state["end"] = "error"
        close()
        raise

    async def events():
        chunk = first
        while chunk is not _end:
            state["chunks"] += 1
            yield {"data": json.dumps(chunk)}
            if await request.is_disconnected():
                state["end"] = "disconnect"
                return
            if settings.interrupt_requests and model.waiting > 0:
                state["end"] = "interrupted"
                return
            chunk = await next_watching()
            if state["stop"]:
                return
        state["end"] = "done"
        yield {"data": "[DONE]"}

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
                elif settings.interrupt_requests and model.waiting > 0:
                    state["end"], state["stop"] = "interrupted", True

    return _LockedEventSource(events(), on_close=close, sep="\n",
                              ping_message_factory=request.app.state.ping_message_factory)


@router.get("/v1/models", dependencies=[Depends(authenticate)], summary="Models")
async def get_models(model: OmniModel = Depends(get_model)):
    return {"object": "list", "data": [{"id": model.alias, "object": "model", "owned_by": "me", "permissions": []}]}


@router.get("/health", summary="Health")
async def health(request: Request):
    model = getattr(request.app.state, "model", None)
    ok = model is not None and model.llama is not None
    return JSONResponse({"status": "ok" if ok else "loading", "model": model.alias if ok else None},
                        status_code=200 if ok else 503)


async def _watching(request: Request, stop: dict, work):
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


def _loc(loc) -> Optional[str]:
    """('body', 'messages', 0, 'content', 'list[...]', 0, 'video_url', 'video_url', 'url') ->
    'messages[0].content[0].video_url.url' (union branch names dropped)."""
    out, prev = "", None
    for x in loc:
        if x == "body" and not out:
            continue
        if isinstance(x, int):
            out += f"[{x}]"
        elif any(c in x for c in "[(") or x in ("str", "list", "dict", "none", "float", "int", "bool") \
                or x == prev:
            continue
        else:
            out += ("." if out else "") + x
        prev = x
    return out or None


def _validation_message(exc: RequestValidationError) -> tuple:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    # The most telling error first: a wrong part type, then the deepest location.
    e = sorted(errors, key=lambda e: (e.get("type") != "union_tag_invalid", -len(e.get("loc", ()))))[0]
    if e.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}", None
    param = _loc(e.get("loc", ()))
    msg = e.get("msg", "invalid value")
    if e.get("type") == "union_tag_invalid":
        msg = (f"unknown content part type {e.get('ctx', {}).get('tag')!r} (supported: text, image_url, "
               "input_audio, video_url)")
    return (f"{param}: {msg}" if param else msg), param


def create_app(settings: Optional[Settings] = None, server_settings: Optional[ServerSettings] = None,
               model_settings: Optional[ModelSettings] = None, model: Optional[OmniModel] = None) -> FastAPI:
    """The app, with the model loaded (or `model`, already loaded, e.g. shared by tests)."""
    import pyomnisift

    if server_settings is None or (model_settings is None and model is None):
        settings = settings or Settings()
        server_settings = server_settings or ServerSettings.model_validate(settings.model_dump())
        model_settings = model_settings or ModelSettings.model_validate(settings.model_dump())
    app = FastAPI(title="pyomnisift", version=pyomnisift.__version__, root_path=server_settings.root_path)
    app.state.server_settings = server_settings
    app.state.ping_message_factory = (lambda: bytes()) if server_settings.disable_ping_events else None
    app.state.model = model if model is not None else OmniModel(model_settings, server_settings)
    app.include_router(router)
    app.add_middleware(RequestGuard, settings=server_settings)   # outermost: the key before the body

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return _error(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        type_ = {401: "authentication_error", 404: "not_found_error"}.get(exc.status_code, "invalid_request_error")
        return _error(exc.status_code, str(exc.detail), type_=type_)

    return app

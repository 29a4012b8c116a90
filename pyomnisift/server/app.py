"""FastAPI app: /v1/chat/completions (JSON or SSE), /v1/models, /health (and, from routes_extra,
/v1/completions, /tokenize, /detokenize, /extras/..., /metrics).

Built from llama_cpp.server's pieces: its ServerSettings and Bearer-key check, its RouteErrorHandler
(OpenAI-shaped errors; here bad input is a 400 instead of a 500), its request model (extended with
omni parts in types.py) and sse-starlette for streaming. One model; an asyncio lock serializes the
requests on it. A stream stops generating at its next token when its client disconnects, or, with
interrupt_requests (llama_cpp.server's setting, on by default), when another request waits; both are
watched while a chunk is being computed, not only between chunks (streaming.py). Error bodies never
carry absolute paths or object reprs (redact.py).
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Optional

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from llama_cpp.server.errors import ErrorResponse, RouteErrorHandler
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import params
from .metrics import Metrics, RequestCounter
from .model import OmniModel, check_messages
from .redact import redact
from .limits import RequestGuard
from .settings import ModelSettings, ServerSettings, Settings
from .streaming import json_response, locked_stream, result_watching_client
from .types import OMNISIFT_FIELDS, OmniChatCompletionRequest

# Fields of llama_cpp.server's request that pyomnisift.Llama.create_chat_completion does not take
# as they come (grammar, logit_bias, logprobs and min_tokens are converted by params.py).
_NOT_PASSED = {"model", "messages", "n", "user", "logit_bias_type", "min_tokens", "stream", "stream_options",
               "grammar", "logit_bias", "logprobs", "top_logprobs"}


def _error(status_code: int, message: str, type_: str = "invalid_request_error", param: Optional[str] = None,
           code: Optional[str] = None) -> JSONResponse:
    return JSONResponse({"error": ErrorResponse(message=message, type=type_, param=param, code=code)},
                        status_code=status_code)


def _is_bad_input(error: Exception) -> bool:
    from .._errors import OmniSiftError

    return isinstance(error, (ValueError, TypeError, FileNotFoundError, OmniSiftError, NotImplementedError))


def _bad_input(error: Exception) -> ErrorResponse:
    return ErrorResponse(message=str(error), type="invalid_request_error", param=getattr(error, "param", None),
                         code=None)


class OmniRouteErrorHandler(RouteErrorHandler):
    """llama_cpp.server's handler; a request the model refuses (bad media, bad settings) is a 400."""

    def error_message_wrapper(self, error, body=None):
        if _is_bad_input(error):
            return 400, _bad_input(error)
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
                status_code, error = self.error_message_wrapper(exc)
                return JSONResponse({"error": error_body(request, error)}, status_code=status_code)
            response.headers["openai-processing-ms"] = f"{int((time.perf_counter() - start) * 1000)}"
            return response

        return handler


def error_body(request: Request, error) -> dict:
    """The error object as sent: its message without the machine's paths or object reprs."""
    body = dict(error)
    body["message"] = redact(str(body.get("message", "")), [request.app.state.server_settings.allowed_media_dir])
    return body


def stream_error(request: Request):
    """The error object of a generation that failed mid-stream (as the route handler's 4xx / 5xx)."""
    def body(exc: BaseException) -> dict:
        if _is_bad_input(exc):
            return error_body(request, _bad_input(exc))
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        return error_body(request, ErrorResponse(message=str(exc), type="internal_server_error", param=None,
                                                 code=None))
    return body


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


def _call_kwargs(body: OmniChatCompletionRequest, messages: list, model: OmniModel) -> dict:
    """pyomnisift.Llama.create_chat_completion's arguments; every field checked first (params.py)."""
    llama = model.llama
    params.check_choices(body.n)
    params.check_max_tokens(body.max_tokens)
    if not body.stream:
        params.check_no_stream_options(body.stream_options)
    top_logprobs = params.chat_logprobs(body.logprobs, body.top_logprobs, params.logits_all(model))
    kwargs = {k: v for k, v in body.model_dump(exclude_unset=True).items() if k not in _NOT_PASSED}
    for key in OMNISIFT_FIELDS:
        if kwargs.get(key) is None:
            kwargs.pop(key, None)
    if top_logprobs is not None:
        kwargs.update(logprobs=True, top_logprobs=top_logprobs)
    bias = params.logit_bias(llama, body.logit_bias, body.logit_bias_type == "tokens")
    if bias is not None:
        kwargs["logit_bias"] = bias
    params.check_response_format(body.response_format)
    grammar = params.grammar(llama, body.grammar)
    if grammar is not None:
        kwargs["grammar"] = grammar
    params.min_tokens(llama, body.min_tokens, kwargs)
    kwargs["model"] = model.alias          # the id /v1/models lists, not the file's path
    kwargs["messages"] = messages
    return kwargs


@router.post("/v1/chat/completions", dependencies=[Depends(authenticate)], summary="Chat")
async def create_chat_completion(request: Request, body: OmniChatCompletionRequest,
                                 model: OmniModel = Depends(get_model)):
    settings: ServerSettings = request.app.state.server_settings
    messages = check_messages(body.messages, settings)
    kwargs = _call_kwargs(body, messages, model)
    llama = model.llama
    metrics = request.app.state.metrics
    await model.acquire()
    if not body.stream:
        # Generated on a thread; a client that leaves meanwhile stops it at its next token.
        stop = {"stop": False}
        kwargs["should_stop"] = lambda: stop["stop"]
        try:
            out = await result_watching_client(request, stop, run_in_threadpool(lambda: llama.create_chat_completion(**kwargs)))
        finally:
            model.lock.release()
        metrics.observe_usage(out.get("usage"))
        return json_response(out)

    def start(should_stop):
        return llama.create_chat_completion(stream=True, should_stop=should_stop, **kwargs)

    return await locked_stream(request, model, start, error_body=stream_error(request),
                               include_usage=bool(body.stream_options and body.stream_options.include_usage),
                               on_usage=metrics.observe_usage)


@router.get("/v1/models", dependencies=[Depends(authenticate)], summary="Models")
async def get_models(model: OmniModel = Depends(get_model)):
    return {"object": "list", "data": [{"id": model.alias, "object": "model", "owned_by": "me", "permissions": []}]}


@router.get("/health", summary="Health")
async def health(request: Request):
    model = getattr(request.app.state, "model", None)
    ok = model is not None and model.llama is not None
    return JSONResponse({"status": "ok" if ok else "loading", "model": model.alias if ok else None},
                        status_code=200 if ok else 503)


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
               "input_audio, video_url, input_video)")
    return (f"{param}: {msg}" if param else msg), param


def create_app(settings: Optional[Settings] = None, server_settings: Optional[ServerSettings] = None,
               model_settings: Optional[ModelSettings] = None, model: Optional[OmniModel] = None) -> FastAPI:
    """The app, with the model loaded (or `model`, already loaded, e.g. shared by tests)."""
    import pyomnisift

    from .routes_extra import router as extra_router   # it builds on this module's route class

    if server_settings is None or (model_settings is None and model is None):
        settings = settings or Settings()
        server_settings = server_settings or ServerSettings.model_validate(settings.model_dump())
        model_settings = model_settings or ModelSettings.model_validate(settings.model_dump())
    app = FastAPI(title="pyomnisift", version=pyomnisift.__version__, root_path=server_settings.root_path)
    app.state.server_settings = server_settings
    app.state.ping_message_factory = (lambda: bytes()) if server_settings.disable_ping_events else None
    app.state.model = model if model is not None else OmniModel(model_settings, server_settings)
    app.state.metrics = Metrics(app.state.model)
    app.include_router(router)
    app.include_router(extra_router)
    app.add_middleware(RequestGuard, settings=server_settings)   # the key before the body
    app.add_middleware(RequestCounter, metrics=app.state.metrics,     # outside: 413s are counted too
                       paths=[r.path for r in router.routes + extra_router.routes])

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return _error(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        type_ = {401: "authentication_error", 404: "not_found_error"}.get(exc.status_code, "invalid_request_error")
        return _error(exc.status_code, str(exc.detail), type_=type_)

    if server_settings.cors_origins:
        # Outermost (added last): a browser's preflight OPTIONS carries no API key.
        app.add_middleware(CORSMiddleware, allow_origins=server_settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    return app

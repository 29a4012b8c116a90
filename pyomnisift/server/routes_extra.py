"""The routes beyond chat: /v1/completions (text prompts, as llama_cpp.server serves them), the
tokenizer in both servers' shapes (llama-server's /tokenize and /detokenize, llama_cpp.server's
/extras/tokenize, /extras/tokenize/count and /extras/detokenize), and /metrics (Prometheus)."""

from __future__ import annotations

import ctypes
import time

import llama_cpp
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from llama_cpp.server.types import (DetokenizeInputRequest, DetokenizeInputResponse, TokenizeInputCountResponse,
                                    TokenizeInputRequest, TokenizeInputResponse)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from .._sampled import SampledTokens
from . import params
from .app import OmniRouteErrorHandler, authenticate, get_model, stream_error
from .model import OmniModel
from .streaming import json_response, locked_stream, result_watching_client
from .types import DetokenizeRequest, OmniCompletionRequest, TokenizeRequest

router = APIRouter(route_class=OmniRouteErrorHandler)

# Fields of llama_cpp.server's completion request that Llama.create_completion does not take as they come.
_NOT_PASSED = {"n", "best_of", "logit_bias_type", "user", "min_tokens", "stream", "stream_options", "grammar",
               "logit_bias", "model"}


def _completion_kwargs(body: OmniCompletionRequest, model: OmniModel) -> dict:
    llama = model.llama
    if isinstance(body.prompt, list):
        if len(body.prompt) > 1:
            raise params.RequestError("prompt", "one prompt per request (a list of one string at most)")
        body.prompt = body.prompt[0] if body.prompt else ""
    params.check_choices(body.n, body.best_of)
    params.check_max_tokens(body.max_tokens)
    params.check_logprobs(body.logprobs, params.logits_all(model), "logprobs")
    if not body.stream:
        params.check_no_stream_options(body.stream_options)
    kwargs = body.model_dump(exclude=_NOT_PASSED)
    bias = params.logit_bias(llama, body.logit_bias, body.logit_bias_type == "tokens")
    if bias is not None:
        kwargs["logit_bias"] = bias
    kwargs["grammar"] = params.grammar(llama, body.grammar)
    params.min_tokens(llama, body.min_tokens, kwargs)
    kwargs["model"] = model.alias
    return kwargs


@router.post("/v1/completions", dependencies=[Depends(authenticate)], summary="Completion")
async def create_completion(request: Request, body: OmniCompletionRequest, model: OmniModel = Depends(get_model)):
    """A text prompt, completed by llama-cpp-python's own create_completion (no media)."""
    kwargs = _completion_kwargs(body, model)
    llama = model.llama
    metrics = request.app.state.metrics
    await model.acquire()
    t0 = time.perf_counter()
    if not body.stream:
        # Generated on a thread; a client that leaves meanwhile stops it at its next token.
        counter, stop = SampledTokens(llama), {"stop": False}
        try:
            counter.start()
            out = await result_watching_client(request, stop, run_in_threadpool(lambda: llama.create_completion(
                stopping_criteria=counter.criteria(lambda ids, logits: stop["stop"]), **kwargs)))
        finally:
            counter.stop()
            model.lock.release()
        metrics.observe_usage(out.get("usage"), _ttft(counter, t0))
        return json_response(out)

    timing = {}

    def start(should_stop):
        counter = timing["counter"] = SampledTokens(llama)
        chunks = llama.create_completion(stream=True, stopping_criteria=counter.criteria(lambda ids, logits: should_stop()),
                                         **kwargs)
        counter.start()
        try:
            for chunk in chunks:
                if chunk["choices"] and chunk["choices"][0].get("finish_reason") is not None:
                    n, p = counter.completion_tokens, counter.prompt_tokens or 0
                    chunk["usage"] = {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}
                yield chunk
        finally:
            counter.stop()

    return await locked_stream(request, model, start, error_body=stream_error(request),
                               include_usage=bool(body.stream_options and body.stream_options.include_usage),
                               on_usage=lambda usage: metrics.observe_usage(usage, _ttft(timing.get("counter"), t0)))


def _ttft(counter, t0: float):
    return None if counter is None or counter.first_token_s is None else counter.first_token_s - t0


def _check_ids(llama: llama_cpp.Llama, tokens: list) -> None:
    # llama.cpp indexes its vocabulary with the id unchecked: an id outside it is a crash, not an error.
    n_vocab = llama.n_vocab()
    for i, t in enumerate(tokens):
        if not 0 <= t < n_vocab:
            raise params.RequestError(f"tokens[{i}]", f"token id {t} is not in the vocabulary (0 to {n_vocab - 1})")


def _piece(llama: llama_cpp.Llama, token: int, special: bool = True) -> bytes:
    # llama-cpp-python's token_to_piece returns its whole 32-byte buffer, and its detokenize keeps
    # garbage for a piece longer than that: ask for the size llama.cpp reports.
    size = 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(llama._model.vocab, token, buf, size, 0, special)
        if n >= 0:
            return buf.raw[:n]
        size = -n


def _piece_json(raw: bytes):
    """llama-server's piece: the text, or its bytes as a list when they are no UTF-8 on their own."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


# The tokenizer routes do not wait for the model's lock (llama.cpp's vocabulary is read-only, and
# llama-server tokenizes beside generation too); they run in the thread pool, as a long text takes a
# while and the event loop keeps serving meanwhile.

@router.post("/tokenize", dependencies=[Depends(authenticate)], summary="Tokenize (llama-server)")
def tokenize(body: TokenizeRequest, model: OmniModel = Depends(get_model)):
    llama = model.llama
    ids = llama.tokenize(body.content.encode("utf-8"), add_bos=body.add_special, special=body.parse_special)
    if body.with_pieces:
        return {"tokens": [{"id": t, "piece": _piece_json(_piece(llama, t))} for t in ids]}
    return {"tokens": ids}


@router.post("/detokenize", dependencies=[Depends(authenticate)], summary="Detokenize (llama-server)")
def detokenize(body: DetokenizeRequest, model: OmniModel = Depends(get_model)):
    _check_ids(model.llama, body.tokens)
    text = b"".join(_piece(model.llama, t) for t in body.tokens)
    return {"content": text.decode("utf-8", errors="replace")}


@router.post("/extras/tokenize", dependencies=[Depends(authenticate)], summary="Tokenize (llama_cpp.server)")
def extras_tokenize(body: TokenizeInputRequest, model: OmniModel = Depends(get_model)) -> TokenizeInputResponse:
    return TokenizeInputResponse(tokens=model.llama.tokenize(body.input.encode("utf-8"), special=True))


@router.post("/extras/tokenize/count", dependencies=[Depends(authenticate)], summary="Token count (llama_cpp.server)")
def extras_tokenize_count(body: TokenizeInputRequest,
                          model: OmniModel = Depends(get_model)) -> TokenizeInputCountResponse:
    return TokenizeInputCountResponse(count=len(model.llama.tokenize(body.input.encode("utf-8"), special=True)))


@router.post("/extras/detokenize", dependencies=[Depends(authenticate)], summary="Detokenize (llama_cpp.server)")
def extras_detokenize(body: DetokenizeInputRequest,
                      model: OmniModel = Depends(get_model)) -> DetokenizeInputResponse:
    _check_ids(model.llama, body.tokens)
    return DetokenizeInputResponse(text=model.llama.detokenize(body.tokens).decode("utf-8", errors="replace"))


@router.get("/metrics", dependencies=[Depends(authenticate)], summary="Prometheus metrics")
async def metrics(request: Request):
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

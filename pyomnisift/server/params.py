"""The sampling fields of a request, checked and turned into llama-cpp-python's arguments, as
llama_cpp.server's `prepare_request_resources` turns them (grammar, logit_bias, min_tokens), with
the checks OpenAI's API makes: every problem is a RequestError (a 400 naming the field) before the
model is touched."""

from __future__ import annotations

import math
from typing import Optional

import llama_cpp

from . import gbnf

MAX_TOP_LOGPROBS = 20   # OpenAI's bound on top_logprobs


class RequestError(ValueError):
    """A request field the server refuses; `param` names it (OpenAI's error `param`)."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(f"{param}: {message}")


def logits_all(model) -> bool:
    """Whether the served model keeps every position's logits (--logits_all)."""
    settings = getattr(model, "settings", None)
    return bool(getattr(settings, "logits_all", False))


def check_choices(n: Optional[int], best_of: Optional[int] = None) -> None:
    if n is not None and n != 1:
        raise RequestError("n", f"only one choice per request is supported (n=1), got {n}")
    if best_of is not None and best_of != 1:
        raise RequestError("best_of", f"only best_of=1 is supported, got {best_of}")


def check_max_tokens(max_tokens: Optional[int]) -> None:
    # llama-cpp-python reads max_tokens <= 0 as "until the context is full"; OpenAI refuses it.
    if max_tokens is not None and max_tokens < 1:
        raise RequestError("max_tokens", f"must be at least 1, got {max_tokens} (leave it out for no limit "
                           "other than the context)")


def check_logprobs(n: Optional[int], logits_all: bool, param: str) -> None:
    """n: how many alternatives per token are asked for (None: no logprobs)."""
    if n is None:
        return
    if not 0 <= n <= MAX_TOP_LOGPROBS:
        raise RequestError(param, f"must be from 0 to {MAX_TOP_LOGPROBS}, got {n}")
    if not logits_all:
        raise RequestError(param, "logprobs need the server started with --logits_all true (it keeps every "
                           "position's logits)")


def chat_logprobs(logprobs: Optional[bool], top_logprobs: Optional[int], logits_all: bool) -> Optional[int]:
    """The chat fields as OpenAI reads them: top_logprobs only with logprobs, which alone gives each
    token's own logprob (top_logprobs 0). Returns top_logprobs for llama-cpp-python, or None."""
    if not logprobs:
        if top_logprobs is not None:
            raise RequestError("top_logprobs", "needs logprobs: true")
        return None
    n = 0 if top_logprobs is None else top_logprobs
    check_logprobs(n, logits_all, "logprobs" if top_logprobs is None else "top_logprobs")
    return n


def logit_bias(llama: llama_cpp.Llama, bias: Optional[dict], by_tokens: bool) -> Optional[dict]:
    """{token id: bias} for llama-cpp-python. Keys are token ids (OpenAI), or with
    logit_bias_type="tokens" (llama_cpp.server) texts whose tokens all get the bias. An id outside
    the vocabulary would index past the logits inside the sampler's callback (a traceback per token
    on stderr, and no bias), so it is refused here."""
    if not bias:
        return None
    n_vocab = llama.n_vocab()
    out = {}
    for key, value in bias.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not -100 <= value <= 100:
            raise RequestError("logit_bias", f"the bias of {key!r} must be a number from -100 to 100, got {value!r}")
        if by_tokens:
            ids = llama.tokenize(key.encode("utf-8"), add_bos=False, special=True)
        else:
            try:
                ids = [int(key)]
            except ValueError:
                raise RequestError("logit_bias", f"keys are token ids, got {key!r} (or set logit_bias_type "
                                   "to \"tokens\")") from None
        for i in ids:
            if not 0 <= i < n_vocab:
                raise RequestError("logit_bias", f"token id {i} is not in the vocabulary (0 to {n_vocab - 1})")
            out[i] = float(value)
    return out


def grammar(llama: llama_cpp.Llama, text: Optional[str]) -> Optional[llama_cpp.LlamaGrammar]:
    """A GBNF grammar (llama.cpp's format, as llama_cpp.server takes it), compiled once here:
    llama-cpp-python only compiles it inside the sampler, where a bad one is not reported. An empty
    one is no grammar (as llama.cpp reads it)."""
    if not text:
        return None
    try:
        gbnf.check(text)
    except gbnf.GrammarTooLarge as e:
        raise RequestError("grammar", f"too large for this server: {e}") from None
    g = llama_cpp.LlamaGrammar.from_string(text, verbose=False)
    sampler = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, g._grammar.encode("utf-8"),
                                                  g._root.encode("utf-8"))
    if not sampler:
        raise RequestError("grammar", "not a valid GBNF grammar with a `root` rule (llama.cpp's grammar format)")
    llama_cpp.llama_sampler_free(sampler)
    return g


_COUNTS = {"maxItems", "minItems", "maxLength", "minLength", "maxProperties", "minProperties"}


def check_response_format(response_format) -> None:
    """A JSON schema becomes a grammar inside llama-cpp-python (json_schema_to_gbnf); bound it as
    a grammar sent as such (a schema's maxItems / maxLength become repetition counts)."""
    if not response_format or response_format.get("type") != "json_object" or "schema" not in response_format:
        return
    import json

    from llama_cpp import llama_grammar

    # Counts are written out as copies by the converter itself (maxItems 10**9: gigabytes of text),
    # so they are bounded before it runs, as is the schema's depth (its recursion).
    todo = [(response_format["schema"], 0)]
    while todo:
        node, depth = todo.pop()
        if depth > gbnf.MAX_NESTING:
            raise RequestError("response_format", f"the schema nests more than {gbnf.MAX_NESTING} deep")
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _COUNTS and isinstance(value, (int, float)) and value > gbnf.MAX_REPETITION:
                    raise RequestError("response_format", f"the schema's {key} {value} is above this server's "
                                       f"bound of {gbnf.MAX_REPETITION}")
                todo.append((value, depth + 1))
        elif isinstance(node, list):
            todo.extend((v, depth + 1) for v in node)
    try:
        text = llama_grammar.json_schema_to_gbnf(json.dumps(response_format["schema"]))
    except Exception:          # llama-cpp-python falls back to its plain JSON grammar
        return
    try:
        gbnf.check(text)
    except gbnf.GrammarTooLarge as e:
        raise RequestError("response_format", f"the schema's grammar is too large for this server: {e}") from None


def min_tokens(llama: llama_cpp.Llama, n: int, kwargs: dict) -> None:
    if n > 0:
        processors = llama_cpp.LogitsProcessorList([llama_cpp.MinTokensLogitsProcessor(n, llama.token_eos())])
        kwargs["logits_processor"] = processors


def check_no_stream_options(stream_options) -> None:
    if stream_options is not None:
        raise RequestError("stream_options", "only allowed when stream is true (as OpenAI's API)")

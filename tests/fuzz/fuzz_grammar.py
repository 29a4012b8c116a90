"""Fuzz the bounds on request grammars (server/gbnf.py) against llama.cpp's GBNF parser: any text
is accepted or refused with GrammarTooLarge, and an accepted one is parsed by llama.cpp
(llama_sampler_init_grammar on the Qwen2 vocabulary) without a crash: a segfault in the parser's
recursion is the finding this guards against."""

from __future__ import annotations

from _common import main

import llama_cpp
from llama_cpp import llama_grammar

from pyomnisift.assets import ensure_assets
from pyomnisift.server import gbnf

VOCAB = llama_cpp.Llama(str(ensure_assets()["ggml-vocab-qwen2.gguf"]), vocab_only=True, verbose=False)


def test_one(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        gbnf.check(text)
    except gbnf.GrammarTooLarge:
        return
    sampler = llama_cpp.llama_sampler_init_grammar(VOCAB._model.vocab, text.encode("utf-8"), b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)


SEEDS = [llama_grammar.JSON_GBNF, llama_grammar.ARITHMETIC_GBNF, llama_grammar.C_GBNF, 'root ::= ("a"{0,32}){0,32}',
         "root ::= " + "(" * 60 + '"a"' + ")" * 60, 'root ::= x{2,5} | y*\nx ::= [a-z]+ "," # c\ny ::= <|im_end|>',
         llama_grammar.json_schema_to_gbnf('{"type": "object", "properties": {"a": {"type": "array", "maxItems": 4}}}')]

if __name__ == "__main__":
    main(test_one, seeds=[s.encode() for s in SEEDS])

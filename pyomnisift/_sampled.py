"""How many tokens a llama-cpp-python generation produced, also when it streams.

llama-cpp-python reports `usage.completion_tokens` only without streaming (the length of its local
list of kept tokens). A stream has to count them itself: `Llama.generate` samples each token with
`self.sample(...)`, then asks the stopping criteria, then yields it; `_create_completion` keeps every
yielded token except an end-of-generation one. So the count is the samples, less the last one when
it was an end-of-generation token or a stopping criterion refused it, which is what the
non-streaming count gives for the same generation.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import llama_cpp


class SampledTokens:
    """Counts the tokens `llama` samples between `start()` and `stop()` (the sampler is wrapped on
    the instance meanwhile). `criteria(inner)` wraps the stopping criteria so that a refused last
    token is known. `prompt_tokens` is the number of positions evaluated before the first sample;
    `first_token_s` when the first token was sampled (time.perf_counter())."""

    def __init__(self, llama: llama_cpp.Llama):
        self.llama = llama
        self.sampled = 0
        self.prompt_tokens: Optional[int] = None
        self.first_token_s: Optional[float] = None
        self._last_eog = False
        self._refused = False
        self._checked = True

    def start(self) -> "SampledTokens":
        llama, sample = self.llama, type(self.llama).sample

        def counted(*args, **kwargs):
            token = sample(llama, *args, **kwargs)
            if self.sampled == 0:
                self.first_token_s = time.perf_counter()
                self.prompt_tokens = llama.n_tokens
            self.sampled += 1
            self._last_eog = bool(llama_cpp.llama_vocab_is_eog(llama._model.vocab, token))
            self._refused, self._checked = False, False
            return token

        llama.sample = counted
        return self

    def stop(self) -> None:
        self.llama.__dict__.pop("sample", None)

    def criteria(self, inner: Optional[Callable]) -> llama_cpp.StoppingCriteriaList:
        def check(input_ids, logits) -> bool:
            stop = bool(inner(input_ids, logits)) if inner is not None else False
            if not self._checked:   # the call right after a sample, not _create_completion's last one
                self._refused, self._checked = stop, True
            return stop

        return llama_cpp.StoppingCriteriaList([check])

    @property
    def completion_tokens(self) -> int:
        return self.sampled - (1 if self.sampled and (self._last_eog or self._refused) else 0)

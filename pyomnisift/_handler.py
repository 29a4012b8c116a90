"""OmniSIFTChatHandler: a llama-cpp-python chat handler for omni input (image, audio, video with its
sound), compressed by OmniSIFT between the encoders and the LLM.

It plugs into a plain ``llama_cpp.Llama(model_path, chat_handler=OmniSIFTChatHandler(clip_model_path=
...))`` as llama-cpp-python's MTMDChatHandler does, and ``pyomnisift.Llama`` is built on it. One
request: messages -> prompt (_prompt) -> plan (_plan) -> context (_context: the part of the plan the
llama context does not hold yet is encoded, sifted and decoded) -> llama-cpp-python's own
create_completion generates (its sampler, grammar, stop strings, streaming) from the positions that
follow. Only the context writes llama's KV cache, input_ids and n_tokens.

Multi-turn reuse: the context keeps llama-cpp-python's bookkeeping (`input_ids[:n_tokens]`, one entry
per position, media as placeholders derived from the item's content and settings), so the longest
common prefix of the new prompt with what the context holds is found position by position: a
follow-up question about the same video encodes nothing and prefills only the new text.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Callable, Iterator, Optional, Union


import llama_cpp
from llama_cpp import llama_chat_format

from ._engine import Engine
from ._errors import ModelFileError
from .media.limits import MediaLimits
from .media.source import LIBRARY, MediaPolicy
from ._families import TEXT_ONLY, family_of
from ._model_info import check_pair, read_llm_info
from ._context import Context
from ._plan import Planner, overflow
from ._prompt import build_prompt, tokenize_text
from ._sampled import SampledTokens
from ._settings import Settings, validate, with_pruning_rate
from ._sift import SiftHead
from ._state_cache import PrefixStates, file_identity, identity
from ._stats import Stats

_UNSUPPORTED = ("functions", "function_call", "tools", "tool_choice")


class OmniSIFTChatHandler:
    """Chat handler for omni prompts. ``clip_model_path`` is the mmproj (None: text only).

    Compression knobs are the fractions of tokens KEPT (defaults: the paper's 35% setting):
    ``video_retention`` per frame grid, ``audio_retention`` per chunk's audio (chosen by
    ``audio_selector``: "anchor", "vgas" with ``sift_head``, "random" or "none"), ``image_retention``
    per image; 1.0 everywhere is the model's exact sequence (``video_pruning_rate``: vLLM's name for
    1 - ``video_retention``). ``fit_context=True`` lowers video, then
    audio retention until the prompt fits n_ctx. ``media_policy`` says which local files a message
    may name (default: any, the caller's own; the server's allows one folder or none) and
    ``media_limits`` bounds the decoding one request may cause (frame size, pixels, duration).
    """

    def __init__(self, clip_model_path: Optional[str] = None, *, verbose: bool = False,
                 use_gpu: Optional[bool] = None, n_threads: Optional[int] = None,
                 video_retention: Optional[float] = None, video_pruning_rate: Optional[float] = None,
                 audio_retention: float = Settings.audio_retention,
                 image_retention: float = Settings.image_retention, audio_selector: str = "anchor",
                 sift_head: Union[None, str, os.PathLike, SiftHead] = None, video_fps: float = 2.0,
                 fit_context: bool = False, seed: int = 0, chat_template: Optional[str] = None,
                 media_policy: MediaPolicy = LIBRARY, media_limits: Optional[MediaLimits] = None):
        if clip_model_path is not None and not os.path.isfile(clip_model_path):
            raise FileNotFoundError(f"mmproj not found: {clip_model_path}")
        self.clip_model_path = None if clip_model_path is None else os.fspath(clip_model_path)
        video_retention = with_pruning_rate(video_retention, video_pruning_rate)
        self.settings = validate(Settings(Settings.video_retention if video_retention is None else video_retention,
                                          audio_retention, image_retention, audio_selector,
                                          seed, video_fps, fit_context))
        if self.settings.audio_selector == "vgas" and sift_head is None:
            raise ValueError('audio_selector="vgas" needs sift_head (a head GGUF from `pyomnisift convert-head`)')
        self.verbose = verbose
        self.use_gpu = use_gpu
        self.n_threads = n_threads
        self.chat_template = chat_template
        if not isinstance(media_policy, MediaPolicy):
            raise TypeError(f"media_policy must be a pyomnisift MediaPolicy, got {type(media_policy).__name__}")
        if media_limits is not None and not isinstance(media_limits, MediaLimits):
            raise TypeError(f"media_limits must be a pyomnisift MediaLimits, got {type(media_limits).__name__}")
        self.media_policy = media_policy
        self.media_limits = media_limits or MediaLimits()
        self._sift_head_arg = sift_head
        self._llama = None

    # --- binding to one llama_cpp.Llama (lazily, as MTMDChatHandler does)

    def bind(self, llama: llama_cpp.Llama) -> None:
        if self._llama is llama:
            return
        if self._llama is not None:
            raise ValueError("an OmniSIFTChatHandler serves one Llama: create one handler per model")
        info = read_llm_info(llama.model_path)
        mm_info = check_pair(llama.model_path, self.clip_model_path)[1] if self.clip_model_path else None
        self.family = family_of(info, mm_info) if mm_info is not None else TEXT_ONLY
        gpu = self.use_gpu if self.use_gpu is not None else llama.model_params.n_gpu_layers != 0
        threads = self.n_threads or llama.n_threads
        # The compression and audio graphs run where the LLM runs: the CPU unless layers are offloaded.
        self.engine = Engine(n_threads=threads, device=None if gpu else "CPU")
        self.sift_head = self._load_head(info.n_embd)
        vision = audio = None
        windowed = False
        n_embd_inp = llama_cpp.llama_model_n_embd_inp(llama.model)
        if self.family.deepstack and mm_info is not None and mm_info.n_deepstack and \
                n_embd_inp != info.n_embd * (1 + mm_info.n_deepstack):
            raise ModelFileError(
                llama.model_path, f"this {self.family.name} model was loaded without the vision tower's "
                f"{mm_info.n_deepstack} deepstack layer(s) (its converter writes 0): load it with pyomnisift.Llama, "
                f"or pass kv_overrides={{'{info.architecture}.n_deepstack_layers': {mm_info.n_deepstack}}}")
        if mm_info is not None:
            from ._mtmd import MtmdEncoder, VocabModel, audio_only, vision_only

            # Qwen2.5-Omni's audio tower runs on 2-s windows, as the model was trained (not mtmd's
            # 30-s padding), in our tower; libmtmd then gets the mmproj without it (one audio tower
            # in memory). Other towers really are 30-s Whisper windows: libmtmd encodes them.
            ours = mm_info.has_audio and self.family.windowed_audio
            # deepstack: libmtmd refuses the two towers together (vision rows wider than audio rows),
            # so each gets a one-tower copy; the audio rows are zero-padded to the model's input width
            split = self.family.deepstack and mm_info.has_audio and mm_info.has_vision
            mtmd_path = vision_only(self.clip_model_path) if (ours or split) and mm_info.has_vision \
                else self.clip_model_path
            if (ours or split) and not mm_info.has_vision:
                vision = None
            else:
                vision = MtmdEncoder(mtmd_path, llama.model, n_embd_inp, threads, use_gpu=gpu,
                                     image_min_tokens=1, image_max_tokens=16384, verbose=llama.verbose)
            if ours:
                from ._audio import AudioTower

                audio, windowed = AudioTower(self.clip_model_path, engine=self.engine), True
            elif split:
                # libmtmd checks the audio rows' width against the model's input width and tokenizes
                # with its vocabulary: given the vocabulary-only load, where no override widens it
                vocab = VocabModel(llama.model_path, verbose=llama.verbose)
                audio = _MtmdAudio(MtmdEncoder(audio_only(self.clip_model_path), vocab, info.n_embd, threads,
                                               use_gpu=gpu, verbose=llama.verbose, n_embd_out=n_embd_inp), owned=True,
                                    qwen3a=mm_info.audio_projector == "qwen3a")
            elif mm_info.has_audio:
                audio = _MtmdAudio(vision)
        self.vision, self.audio = vision, audio
        self.formatter = self._formatter(llama)
        def tokenize(text: str, add_bos: bool) -> list:
            return tokenize_text(lambda b, bos, special: llama.tokenize(b, add_bos=bos, special=special), text, add_bos)

        self.planner = Planner(tokenize=tokenize,
                               uses_mrope=info.uses_mrope, vision=vision, audio=audio, audio_windowed=windowed,
                               family=self.family, head_id=self.sift_head.path if self.sift_head is not None else "")
        self.context = Context(vision=vision, audio=audio, engine=self.engine, uses_mrope=info.uses_mrope)
        self._gpu = gpu
        self._identity = None
        self._llama = llama
        llama._stack.callback(self.close)

    def _cache_identity(self, llama) -> bytes:
        """What besides the prompt shapes the states of the media cache: the files and builds, the KV
        cache, and this handler's devices, batching and head (hashed once, on the first use)."""
        if self._identity is None:
            self._identity = identity(llama, self.clip_model_path, extra=(
                self._gpu, self.context.batch_rows, self.context.reuse_identical_pairs,
                file_identity(self.sift_head.path) if self.sift_head is not None else b"-"))
        return self._identity

    def _load_head(self, n_embd: int) -> Optional[SiftHead]:
        head = self._sift_head_arg
        if head is None:
            return None
        if not isinstance(head, SiftHead):
            head = SiftHead(head, self.engine)
        elif head.engine is not self.engine:
            raise ValueError("sift_head was loaded with another engine: pass its path instead")
        if head.n_embd != n_embd:
            raise ValueError(f"the sift head {head.path} is for embeddings of width {head.n_embd}, but the "
                             f"model has width {n_embd}")
        return head

    def _formatter(self, llama) -> llama_chat_format.Jinja2ChatFormatter:
        # Built exactly as llama_cpp.Llama builds its "chat_template.default" handler, so that a text
        # prompt renders and tokenizes as llama-cpp-python's own.
        template = self.chat_template or llama.metadata.get("tokenizer.chat_template") or self.family.chat_template
        eos, bos = llama.token_eos(), llama.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llama._model.token_get_text(bos) if bos != -1 else "", stop_token_ids=[eos])

    def close(self) -> None:
        for name in ("vision", "audio", "sift_head", "engine"):
            obj = getattr(self, name, None)
            if obj is not None and hasattr(obj, "close"):
                obj.close()
            setattr(self, name, None)

    # --- one request

    def __call__(self, *, llama: llama_cpp.Llama, messages: list, stream: bool = False,
                 max_tokens: Optional[int] = None, stop: Union[None, str, list] = None,
                 response_format: Optional[dict] = None, grammar=None, logprobs: Optional[bool] = None,
                 top_logprobs: Optional[int] = None, settings: Optional[Settings] = None,
                 on_unit: Optional[Callable] = None, progress: Optional[Callable] = None,
                 should_stop: Optional[Callable[[], bool]] = None, **kwargs: Any) -> Union[dict, Iterator[dict]]:
        for name in _UNSUPPORTED:
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"{name} is not supported by pyomnisift's chat handler (no tool calling)")
        completion_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _COMPLETION_ARGS}
        if kwargs:
            raise TypeError(f"unexpected argument(s): {', '.join(sorted(kwargs))}")
        settings = settings or self.settings
        if settings.audio_selector == "vgas" and self._sift_head_arg is None:
            raise ValueError('audio_selector="vgas" needs a handler created with sift_head')
        self.bind(llama)
        t0 = time.perf_counter()
        plan, stats, formatted = self._prefill(llama, messages, settings, max_tokens, on_unit, progress)
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        if response_format is not None and response_format.get("type") == "json_object":
            grammar = llama_chat_format._grammar_for_response_format(response_format, verbose=llama.verbose)
        room = llama.n_ctx() - plan.n_cells
        budget = room if not max_tokens or max_tokens <= 0 else min(max_tokens, room)
        first = _FirstToken(t0, progress, budget, len(plan.ids) - stats.prefill_from)
        criteria = llama_cpp.StoppingCriteriaList(
            [first] + list(formatted.stopping_criteria or [])
            + ([lambda ids, logits: bool(should_stop())] if should_stop is not None else []))
        counter = SampledTokens(llama) if stream else None
        result = llama.create_completion(
            prompt=plan.ids, stream=stream, max_tokens=budget,
            stop=_stops(stop) + stops, grammar=grammar, logprobs=top_logprobs if logprobs else None,
            stopping_criteria=counter.criteria(criteria) if stream else criteria, **completion_kwargs)
        chat = llama_chat_format._convert_completion_to_chat(result, stream=stream)

        def usage(n_generated: int) -> dict:
            out = stats.as_dict(plan)
            out["timings_ms"]["ttft"] = first.ms
            first.done(n_generated)
            return {"prompt_tokens": plan.n_cells, "completion_tokens": n_generated,
                    "total_tokens": plan.n_cells + n_generated, "omnisift": out}

        if not stream:
            chat["usage"] = usage(chat["usage"]["completion_tokens"])
            return chat

        return _with_usage(chat, counter, lambda: usage(counter.completion_tokens))

    def _prefill(self, llama, messages, settings: Settings, max_tokens, on_unit, progress):
        """Plans the prompt and has the context decode what it does not hold yet."""
        formatted = {}

        def render(flat):
            result = self.formatter(messages=flat)
            formatted["result"] = result
            return result.prompt

        prompt = build_prompt(messages, render, self.media_policy, self.media_limits,
                              (self.family.vision_bos, self.family.vision_eos),
                              (self.family.audio_bos, self.family.audio_eos))
        result = formatted["result"]
        stats = Stats()
        probes = []
        encoded_ms, encoder_calls = self.planner.audio_encoded_ms, self.planner.audio_encoder_calls
        with stats.timer("media_decode"):
            for item in prompt.media:
                probes.append(self.planner.probe(item, settings))
                stats.warnings.extend(probes[-1].warnings)
                if progress is not None:
                    progress("plan", len(probes), len(prompt.media))
        # a tower that encodes whole clips did so while probing: encoding, not media decoding
        encoded_ms = self.planner.audio_encoded_ms - encoded_ms
        stats.timings["media_decode"] -= encoded_ms
        stats.timings["encode_audio"] += encoded_ms
        stats.encoder_calls["audio"] += self.planner.audio_encoder_calls - encoder_calls
        for w in stats.warnings:
            warnings.warn(w, stacklevel=4)
        add_bos = not result.added_special   # as llama-cpp-python's chat handlers tokenize
        n_ctx = llama.n_ctx()
        reserve = max_tokens if settings.fit_context and max_tokens and max_tokens > 0 else 1
        if settings.fit_context:
            plan = self.planner.fit(prompt, settings, probes, n_ctx - reserve, add_bos)
        else:
            plan = self.planner.plan(prompt, settings, probes, add_bos)
        if plan.n_cells + reserve > n_ctx:
            raise overflow(plan, n_ctx, reserve if settings.fit_context else 0)

        cache = getattr(llama, "media_cache", None)
        states = PrefixStates(cache, self._cache_identity(llama)) if cache is not None else None
        self.context.prefill(llama, plan, stats, sift_head=self.sift_head, on_unit=on_unit, progress=progress,
                             states=states)
        return plan, stats, result


_COMPLETION_ARGS = {"temperature", "top_p", "top_k", "min_p", "typical_p", "seed", "presence_penalty",
                    "frequency_penalty", "repeat_penalty", "tfs_z", "mirostat_mode", "mirostat_tau",
                    "mirostat_eta", "model", "logits_processor", "logit_bias"}


class _MtmdAudio:
    """libmtmd's audio encoder behind the `encode_audio` name the planner uses; `owned`: an encoder
    of its own (closed with it), not the vision one's.

    `qwen3a`: two differences of libmtmd 0.3.36's Qwen3-Omni audio from the reference
    (transformers' WhisperFeatureExtractor and _get_feat_extract_output_lengths), mended here:
    - it keeps n_samples / hop + 1 mel frames where the reference keeps n_samples / hop (it drops
      the centred STFT's last frame): the audio given to libmtmd ends one sample before the last
      whole hop, which makes the reference's frame count (4 s: 401 frames gave 65 rows, not 52);
    - it pads the last 100-frame chunk with zero frames and returns 13 rows for it whatever its
      length, where the reference returns the rows of the frames there are: the rows past the
      reference's count (made from padding) are dropped."""

    HOP, CHUNK, ROWS_PER_CHUNK = 160, 100, 13

    def __init__(self, mtmd, owned: bool = False, qwen3a: bool = False):
        self._encode = mtmd.encode_audio
        self._qwen3a = qwen3a
        self._owned = mtmd if owned else None

    @classmethod
    def qwen3a_rows(cls, n_frames: int) -> int:
        """The reference's rows for n_frames mel frames: 13 per whole chunk, then the tail through
        three stride-2 convolutions (_get_feat_extract_output_lengths)."""
        tail = n_frames % cls.CHUNK
        for _ in range(3):
            tail = (tail - 1) // 2 + 1 if tail else 0
        return n_frames // cls.CHUNK * cls.ROWS_PER_CHUNK + tail

    def encode_audio(self, pcm):
        if not self._qwen3a:
            return self._encode(pcm)
        n_frames = len(pcm) // self.HOP
        if n_frames < 1:
            raise ValueError(f"audio of {len(pcm)} samples is shorter than one mel frame ({self.HOP} samples)")
        rows = self._encode(pcm[:n_frames * self.HOP - 1])
        return rows[:self.qwen3a_rows(n_frames)]

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None


class _FirstToken:
    """A stopping criterion that never stops: it notes when the first token was sampled (the
    prompt's last `n_prefill` positions are then decoded) and reports the tokens as they come."""

    def __init__(self, t0: float, progress: Optional[Callable], budget: int, n_prefill: int):
        self.t0, self.ms = t0, None
        self.progress, self.budget, self.n_prefill, self.n = progress, budget, n_prefill, 0

    def __call__(self, input_ids, logits) -> bool:
        if self.ms is None:
            self.ms = round((time.perf_counter() - self.t0) * 1000.0, 3)
            if self.progress is not None and self.n_prefill > 0:
                self.progress("prefill", self.n_prefill, self.n_prefill)
        self.n += 1   # also called once after the last token: the last report is done()'s
        if self.progress is not None and self.n < self.budget:
            self.progress("generate", self.n, self.budget)
        return False

    def done(self, n_generated: int) -> None:
        if self.progress is not None:
            self.progress("generate", n_generated, n_generated)


def _stops(stop) -> list:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _with_usage(chunks: Iterator[dict], counter: SampledTokens, usage: Callable[[], dict]) -> Iterator[dict]:
    """llama-cpp-python's chat chunks, the last (the one with a finish_reason) carrying usage: the
    prompt's KV cells, the tokens generated (counted as the stream runs) and OmniSIFT's stats."""
    counter.start()
    try:
        for chunk in chunks:
            if chunk["choices"] and chunk["choices"][0].get("finish_reason") is not None:
                chunk["usage"] = usage()
            yield chunk
    finally:
        counter.stop()

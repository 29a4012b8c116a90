"""pyomnisift.Llama: llama-cpp-python's Llama with omni input (image, audio, video with its sound)
and OmniSIFT compression between the encoders and the LLM.

The llama.cpp model and context are llama-cpp-python's own (`llama_cpp.Llama`); what changes is how
a prompt reaches the context: the model's own omni sequence, compressed, decoded at the original
M-RoPE positions (see _pipeline.py), then generation at the positions that follow.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from typing import Any, Optional

import numpy as np

import llama_cpp

from . import omnisift_cpp as C
from ._engine import Engine
from ._model_info import check_pair, read_llm_info
from ._pipeline import CompressionConfig, Pipeline
from ._prompt import build_prompt
from ._sift import AUDIO_SELECTORS, SiftHead, _retention
from ._mtmd import MtmdEncoder


class Llama:
    """A GGUF LLM (+ its mmproj) that takes OpenAI-style omni chat messages.

    Compression knobs are the fractions of tokens KEPT: `video_retention` per video frame grid,
    `audio_retention` per 2-second chunk's audio (chosen by `audio_selector`: "anchor"
    (training-free, default), "vgas" (the learned head in `sift_head`), "random" or "none"),
    `image_retention` per image. 1.0 (the default) keeps everything: the model's exact sequence.
    Other keyword arguments go to llama_cpp.Llama (n_gpu_layers, flash_attn, ...).
    """

    def __init__(self, model_path: str, mmproj_path: Optional[str] = None, *, n_ctx: int = 8192,
                 n_batch: int = 1024, n_threads: Optional[int] = None, n_gpu_layers: int = 0,
                 seed: int = 0, verbose: bool = False,
                 video_retention: float = 1.0, audio_retention: float = 1.0, image_retention: float = 1.0,
                 audio_selector: str = "anchor", sift_head: Optional[str] = None,
                 video_fps: float = 2.0, **llama_kwargs: Any):
        self.model_path = os.fspath(model_path)
        if mmproj_path is not None:
            info, mm_info = check_pair(model_path, mmproj_path)
        else:
            info, mm_info = read_llm_info(model_path), None
        if audio_selector not in AUDIO_SELECTORS:
            raise ValueError(f"unknown audio_selector {audio_selector!r} (expected one of {', '.join(AUDIO_SELECTORS)})")
        if audio_selector == "vgas" and sift_head is None:
            raise ValueError('audio_selector="vgas" needs sift_head (a head GGUF from scripts/convert_sift_head.py)')
        config = CompressionConfig(_retention("video_retention", video_retention),
                                   _retention("audio_retention", audio_retention),
                                   _retention("image_retention", image_retention), audio_selector, None, seed)
        if not (video_fps > 0):
            raise ValueError(f"video_fps must be positive, got {video_fps}")

        self._llm = llama_cpp.Llama(self.model_path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                                    n_threads=n_threads, n_gpu_layers=n_gpu_layers, seed=seed,
                                    verbose=verbose, **llama_kwargs)
        self.n_ctx = self._llm.n_ctx()
        # The compression and audio graphs run where the LLM runs: the CPU unless layers are offloaded.
        self._engine = Engine(n_threads=n_threads, device="CPU" if n_gpu_layers == 0 else None)
        if sift_head is not None:
            config.sift_head = SiftHead(sift_head, self._engine)
            if config.sift_head.n_embd != info.n_embd:
                raise ValueError(f"the sift head {sift_head} is for embeddings of width {config.sift_head.n_embd}, "
                                 f"but {self.model_path} has width {info.n_embd}")
        self._mtmd = self._audio = None
        encode_audio = None
        if mm_info is not None:
            self._mtmd = MtmdEncoder(mmproj_path, self._llm.model, info.n_embd, n_threads or 0,
                                     use_gpu=n_gpu_layers != 0, image_min_tokens=1, image_max_tokens=16384)
            if mm_info.has_audio and mm_info.projector_type == "qwen2.5o":
                # Qwen2.5-Omni's tower on 2-s windows, as the model was trained (not mtmd's 30-s padding)
                from ._audio import AudioTower

                self._audio = AudioTower(mmproj_path, engine=self._engine)
                encode_audio = self._audio.encode
            elif mm_info.has_audio:
                encode_audio = self._mtmd.encode_audio  # towers that really are 30-s Whisper windows
        self._template = self._chat_template()
        self._pipeline = Pipeline(
            tokenize=lambda text: self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True),
            n_ctx=self.n_ctx, n_embd=info.n_embd, uses_mrope=info.uses_mrope, vision=self._mtmd,
            encode_audio=encode_audio, audio_windowed=self._audio is not None,
            decode_rows=self._decode_rows, decode_tokens=self._decode_tokens,
            config=config, engine=self._engine, fps=video_fps)

    def _chat_template(self):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        source = self._llm.metadata.get("tokenizer.chat_template")
        if not source:
            raise ValueError(f"{self.model_path} has no chat template (tokenizer.chat_template)")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message):
            raise ValueError(f"chat template: {message}")

        env.globals["raise_exception"] = raise_exception
        return env.from_string(source)

    def _render(self, messages) -> str:
        return self._template.render(messages=messages, add_generation_prompt=True,
                                     bos_token="", eos_token="")

    # --- decoding through libomnisift (explicit positions)

    def _decode_rows(self, rows: np.ndarray, positions: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        positions = np.ascontiguousarray(positions, dtype=np.int32)
        C.check(C.omnisift_decode_embd(self._llm.ctx, rows.ctypes.data_as(C._float_p), len(rows), rows.shape[1],
                                       positions.ctypes.data_as(C._int32_p), 0, 0), "decode")

    def _decode_tokens(self, tokens, positions, logits_last: bool) -> None:
        toks = np.ascontiguousarray(tokens, dtype=np.int32)
        pos = np.ascontiguousarray(positions, dtype=np.int32)
        C.check(C.omnisift_decode_tokens(self._llm.ctx, toks.ctypes.data_as(C._int32_p), len(toks),
                                         pos.ctypes.data_as(C._int32_p), 0, int(logits_last)), "decode")

    def _reset(self) -> None:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._llm.ctx), True)

    # --- public API

    def prefill(self, messages: list, **compression: Any) -> dict:
        """Decodes the prompt of `messages` and leaves its last logits ready. Returns
        {"prompt_tokens": tokens decoded, "omnisift": stats}.

        `compression` overrides the constructor's knobs for this call (video_retention,
        audio_retention, image_retention, audio_selector, seed)."""
        config = self._call_config(compression)
        self._reset()
        saved, self._pipeline.config = self._pipeline.config, config
        try:
            prompt = build_prompt(messages, self._render)
            n, stats = self._pipeline.run(prompt)
        except BaseException:
            self._reset()  # a half-decoded prompt must not leak into the next request
            raise
        finally:
            self._pipeline.config = saved
        return {"prompt_tokens": n, "omnisift": stats.as_dict()}

    def _call_config(self, overrides: dict) -> CompressionConfig:
        base = self._pipeline.config
        unknown = set(overrides) - {"video_retention", "audio_retention", "image_retention", "audio_selector", "seed"}
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        values = {k: v for k, v in overrides.items() if v is not None}
        for key in ("video_retention", "audio_retention", "image_retention"):
            if key in values:
                values[key] = _retention(key, values[key])
        selector = values.get("audio_selector", base.audio_selector)
        if selector not in AUDIO_SELECTORS:
            raise ValueError(f"unknown audio_selector {selector!r} (expected one of {', '.join(AUDIO_SELECTORS)})")
        if selector == "vgas" and base.sift_head is None:
            raise ValueError('audio_selector="vgas" needs the Llama to be created with sift_head')
        return dataclasses.replace(base, **values)

    def logits(self) -> np.ndarray:
        """The last decoded position's logits (float32 [n_vocab])."""
        ptr = llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._llm.n_vocab(),)).copy()

    def create_chat_completion(self, messages: list, *, max_tokens: Optional[int] = None,
                               temperature: float = 0.2, top_p: float = 0.95, top_k: int = 40,
                               min_p: float = 0.05, stop=None, seed: Optional[int] = None,
                               stream: bool = False, video_retention: Optional[float] = None,
                               audio_retention: Optional[float] = None, image_retention: Optional[float] = None,
                               audio_selector: Optional[str] = None) -> dict:
        """llama-cpp-python's create_chat_completion, with image_url, input_audio and video_url parts.

        The retention / selector arguments override the constructor's for this call. Returns the
        OpenAI-shaped response; usage["omnisift"] holds the compression statistics."""
        if stream:
            raise NotImplementedError("stream=True is not supported yet: call with stream=False")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        t0 = time.perf_counter()
        prefill = self.prefill(messages, video_retention=video_retention, audio_retention=audio_retention,
                               image_retention=image_retention, audio_selector=audio_selector)
        t_prefill = time.perf_counter() - t0
        text, n_out, finish = self._generate(max_tokens, temperature, top_p, top_k, min_p, stops, seed)
        usage = {"prompt_tokens": prefill["prompt_tokens"], "completion_tokens": n_out,
                 "total_tokens": prefill["prompt_tokens"] + n_out, "omnisift": prefill["omnisift"]}
        usage["omnisift"]["timings_ms"]["ttft"] = round(t_prefill * 1000.0, 3)
        return {
            "id": f"chatcmpl-{uuid.uuid4()}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model_path,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage,
        }

    def _generate(self, max_tokens, temperature, top_p, top_k, min_p, stops, seed):
        ctx = self._llm.ctx
        vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        pos = self._pipeline.next_pos
        limit = self.n_ctx - self._pipeline.next_pos if max_tokens is None or max_tokens <= 0 else max_tokens
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        try:
            if temperature <= 0:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            else:
                for s in (llama_cpp.llama_sampler_init_top_k(top_k), llama_cpp.llama_sampler_init_top_p(top_p, 1),
                          llama_cpp.llama_sampler_init_min_p(min_p, 1), llama_cpp.llama_sampler_init_temp(temperature),
                          llama_cpp.llama_sampler_init_dist(self._seed(seed))):
                    llama_cpp.llama_sampler_chain_add(chain, s)
            out: list[int] = []
            finish = "length"
            while len(out) < limit:
                tok = llama_cpp.llama_sampler_sample(chain, ctx, -1)
                if llama_cpp.llama_vocab_is_eog(vocab, tok):
                    finish = "stop"
                    break
                out.append(tok)
                text = self._llm.detokenize(out).decode("utf-8", errors="ignore")
                if any(s in text for s in stops):
                    finish = "stop"
                    break
                if len(out) == limit or pos + 1 >= self.n_ctx:
                    break
                self._decode_tokens([tok], [pos], True)
                pos += 1
            text = self._llm.detokenize(out).decode("utf-8", errors="ignore")
            for s in stops:
                if s in text:
                    text = text[:text.index(s)]
            return text, len(out), finish
        finally:
            llama_cpp.llama_sampler_free(chain)

    def _seed(self, seed: Optional[int]) -> int:
        return int(seed if seed is not None else int.from_bytes(os.urandom(4), "little")) & 0xFFFFFFFF

    def close(self) -> None:
        for name in ("_mtmd", "_audio"):
            obj = getattr(self, name, None)
            if obj is not None and hasattr(obj, "close"):
                obj.close()
            setattr(self, name, None)
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None

    def __enter__(self) -> "Llama":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


__all__ = ["Llama"]

"""pyomnisift.Llama: llama-cpp-python's Llama, with omni chat input compressed by OmniSIFT.

A subclass of ``llama_cpp.Llama``: every constructor argument, ``create_completion``, ``__call__``,
``tokenize``, ``detokenize``, ``reset``, ``save_state`` / ``load_state`` are llama-cpp-python's own.
What it adds: an mmproj and the OmniSIFT knobs (passed to an OmniSIFTChatHandler, which does the omni
work), per-call compression settings on ``create_chat_completion``, and a load that does not crash on
CPUs with AMX (see _cpu.py).
"""

from __future__ import annotations

import ctypes
import inspect
import os
from typing import Any, Callable, Optional, Union

import llama_cpp

from .cache import MediaCache
from ._cpu import repack_overrides as _repack_overrides, use_extra_bufts as _use_extra_bufts
from ._devices import add_rpc_servers
from ._families import family_of
from ._handler import OmniSIFTChatHandler
from .media.limits import MediaLimits
from .media.source import LIBRARY, MediaPolicy
from ._model_info import check_pair, read_llm_info
from ._settings import Settings, with_pruning_rate
from ._sift import SiftHead

_CHAT_ARGS = [p for p in inspect.signature(llama_cpp.Llama.create_chat_completion).parameters
              if p not in ("self", "messages")]



def _deepstack_override(llm, mm, overrides: Optional[dict]) -> Optional[dict]:
    """llama.cpp's converter writes Qwen3-Omni's thinker with n_deepstack_layers 0, so the model
    would ignore the vision tower's deepstack features that transformers' thinker adds after its
    first layers (and libmtmd would refuse the vision rows, wider than the model's input): the count
    the mmproj was written with goes to llama.cpp as a metadata override (_families.Family.deepstack)."""
    family = family_of(llm, mm)
    if not (family.deepstack and mm.n_deepstack):
        return overrides
    return {f"{llm.architecture}.n_deepstack_layers": mm.n_deepstack, **(overrides or {})}

class Llama(llama_cpp.Llama):
    """A GGUF LLM (+ its mmproj) that takes OpenAI-style omni chat messages.

    ``Llama(model_path, mmproj_path, n_ctx=..., n_gpu_layers=..., ...)``: the keyword arguments of
    ``llama_cpp.Llama`` (defaults for media: n_ctx 8192, n_batch = n_ubatch = 1024, verbose False),
    plus the OmniSIFT knobs, the fractions of tokens KEPT: ``video_retention`` (0.33) per video
    frame grid, ``audio_retention`` (0.6) per 2-second chunk's audio chosen by ``audio_selector``
    ("anchor" (training-free), "vgas" (the learned head in ``sift_head``), "random", "none"),
    ``image_retention`` (1.0) per image; 1.0 everywhere keeps the model's exact sequence.
    ``video_pruning_rate``: vLLM's name for the fraction of video tokens pruned (EVS), accepted
    instead of ``video_retention`` (= 1 - rate), here and per call. ``fit_context=True`` lowers video, then audio retention until the prompt fits n_ctx.
    ``use_extra_bufts``: llama.cpp's extra CPU weight buffer types (repacking); None (default) turns
    them off only on CPUs where llama.cpp 0.3.36 crashes with them (AMX), True / False forces.
    ``cpu_repack``: with extra buffer types off, still place the weights llama.cpp's CPU_REPACK
    buffer type handles there (its faster AVX2 / AVX-512 layouts, without the crashing AMX one);
    None (default) does so where the AMX rule turned them off and the layers stay on the CPU.
    ``chat_template``: a Jinja template for a GGUF without one (default: the GGUF's, else the
    released one of the model's family: Qwen2.5-Omni's, Qwen2.5-VL's). ``rpc_servers``: ggml RPC servers ("host:port", a list or comma-separated, as
    llama.cpp's ``--rpc``) registered as devices before the model loads (``add_rpc_servers``); with
    ``n_gpu_layers`` the LLM, the towers and the compression run there.
    ``media_policy`` (``pyomnisift.MediaPolicy``): which local files messages may
    name (default: any); ``media_limits`` (``pyomnisift.MediaLimits``): the decoding a request may
    cause (frame size, pixels decoded, media duration; defaults in its docstring).
    ``cache`` (``pyomnisift.MediaRAMCache`` / ``MediaDiskCache``, or later ``set_cache``): the media
    cache, where the state of a prompt up to each decoded media item is kept, so that the same
    prefix (same text before it, same media, same settings) in another conversation or another
    process is restored instead of encoded again.
    """

    def __init__(self, model_path: Union[str, os.PathLike], mmproj_path: Optional[Union[str, os.PathLike]] = None,
                 *, n_ctx: int = 8192, n_batch: int = 1024, n_ubatch: Optional[int] = None,
                 verbose: bool = False, video_retention: Optional[float] = None,
                 video_pruning_rate: Optional[float] = None,
                 audio_retention: float = Settings.audio_retention, image_retention: float = Settings.image_retention,
                 audio_selector: str = "anchor", sift_head: Union[None, str, os.PathLike, SiftHead] = None,
                 video_fps: float = 2.0, fit_context: bool = False, sift_seed: int = 0,
                 use_extra_bufts: Optional[bool] = None, cpu_repack: Optional[bool] = None,
                 chat_template: Optional[str] = None, media_policy: MediaPolicy = LIBRARY,
                 media_limits: Optional[MediaLimits] = None,
                 chat_handler: Optional[OmniSIFTChatHandler] = None,
                 progress: Optional[Callable[[str, int, int], None]] = None,
                 rpc_servers: Union[None, str, list] = None, cache: Optional[MediaCache] = None, **kwargs: Any):
        if rpc_servers:   # before the model and the engine pick their devices
            add_rpc_servers(rpc_servers)
        model_path = os.fspath(model_path)
        # a clear error for a missing / non-GGUF / mmproj-as-model file, or a pair of a family
        # pyomnisift does not serve, before the model loads
        if mmproj_path is None:
            read_llm_info(model_path)
        else:
            kwargs["kv_overrides"] = _deepstack_override(*check_pair(model_path, mmproj_path), kwargs.get("kv_overrides"))
        if chat_handler is not None and mmproj_path is not None:
            raise ValueError("give either mmproj_path or chat_handler, not both")
        handler = chat_handler or OmniSIFTChatHandler(
            None if mmproj_path is None else os.fspath(mmproj_path), verbose=verbose,
            video_retention=video_retention, video_pruning_rate=video_pruning_rate,
            audio_retention=audio_retention, image_retention=image_retention,
            audio_selector=audio_selector, sift_head=sift_head, video_fps=video_fps, fit_context=fit_context,
            seed=sift_seed, chat_template=chat_template, n_threads=kwargs.get("n_threads"),
            media_policy=media_policy, media_limits=media_limits)
        self._extra_bufts = _use_extra_bufts(use_extra_bufts)
        if cpu_repack is not None and not isinstance(cpu_repack, bool):
            raise TypeError(f"cpu_repack must be True, False or None (auto), got {cpu_repack!r}")
        if cpu_repack is None:   # auto: only where the AMX rule turned repacking off, on the CPU
            cpu_repack = (use_extra_bufts is None and not self._extra_bufts
                          and (kwargs.get("n_gpu_layers", 0) == 0 or not llama_cpp.llama_supports_gpu_offload()))
        self._repack = _repack_overrides(model_path) if cpu_repack and not self._extra_bufts else None
        # the LLM's weights are the first 90% of the load when encoders follow
        self._load_progress = None if progress is None else _LoadProgress(
            progress, 0.9 if handler.clip_model_path else 1.0)
        try:
            super().__init__(model_path, n_ctx=n_ctx, n_batch=n_batch,
                             n_ubatch=n_batch if n_ubatch is None else n_ubatch, verbose=verbose,
                             chat_handler=handler, **kwargs)
        except Exception:
            if self._load_progress is not None and self._load_progress.error is not None:
                raise self._load_progress.error from None   # the callback's, not "failed to load"
            raise
        handler.bind(self)   # load the encoders now: a bad mmproj fails here, not on the first request
        self.media_cache: Optional[MediaCache] = None
        if cache is not None:
            self.set_cache(cache)
        if progress is not None:
            progress("load", _LoadProgress.TOTAL, _LoadProgress.TOTAL)

    # llama_cpp.Llama.__init__ assigns `self.model_params = llama_model_default_params()` and passes
    # it to the model loader; this setter is where use_extra_bufts gets into it, before the load.
    @property
    def model_params(self):
        return self.__dict__["model_params"]

    @model_params.setter
    def model_params(self, params) -> None:
        params.use_extra_bufts = self._extra_bufts
        if self._load_progress is not None:
            params.progress_callback = self._load_progress.c_callback
        if self._repack is not None:
            params.tensor_buft_overrides = ctypes.cast(self._repack, ctypes.c_void_p)
        self.__dict__["model_params"] = params

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str, mmproj_filename: Optional[str] = None,
                        additional_files: Optional[list] = None,
                        local_dir: Optional[Union[str, os.PathLike]] = None,
                        local_dir_use_symlinks: Union[bool, str] = "auto",
                        cache_dir: Optional[Union[str, os.PathLike]] = None, **kwargs: Any) -> "Llama":
        """The LLM GGUF ``filename`` and its mmproj ``mmproj_filename`` from one Hugging Face
        repository, each a file name or a glob (``"*Q4_K_M.gguf"``, ``"mmproj-*f16.gguf"``), as
        ``llama_cpp.Llama.from_pretrained`` takes the LLM and llama-cpp-python's multimodal chat
        handlers' ``from_pretrained`` the mmproj. Files already in the Hub's cache (``cache_dir``)
        or ``local_dir`` are not fetched again; with ``HF_HUB_OFFLINE=1`` nothing is. ``kwargs``
        are the constructor's. Needs huggingface-hub."""
        from ._hub import fetch

        where = dict(cache_dir=cache_dir, local_dir=local_dir, local_dir_use_symlinks=local_dir_use_symlinks)
        if mmproj_filename is not None:
            if kwargs.get("mmproj_path") is not None or kwargs.get("chat_handler") is not None:
                raise ValueError("give mmproj_filename, or mmproj_path / chat_handler, not both")
            kwargs["mmproj_path"] = fetch(repo_id, mmproj_filename, **where)
        for name in additional_files or []:   # the other shards of a split GGUF, beside the first
            fetch(repo_id, name, **where)
        return cls(fetch(repo_id, filename, **where), **kwargs)

    def set_cache(self, cache) -> None:
        """A media cache (``MediaRAMCache`` / ``MediaDiskCache``) for the chat API's media prefixes, or
        None for none; llama-cpp-python's own caches (``LlamaRAMCache`` ...) go to llama-cpp-python,
        as in ``llama_cpp.Llama.set_cache``."""
        if cache is None or isinstance(cache, MediaCache):
            self.media_cache = cache
        else:
            super().set_cache(cache)

    @property
    def settings(self) -> Settings:
        """The constructor's OmniSIFT settings (per-call overrides go to create_chat_completion)."""
        return self.chat_handler.settings

    def create_chat_completion(self, messages: list, *args: Any, video_retention: Optional[float] = None,
                               video_pruning_rate: Optional[float] = None,
                               audio_retention: Optional[float] = None, image_retention: Optional[float] = None,
                               audio_selector: Optional[str] = None, video_fps: Optional[float] = None,
                               fit_context: Optional[bool] = None, sift_seed: Optional[int] = None,
                               on_unit: Optional[Callable] = None, progress: Optional[Callable] = None,
                               should_stop: Optional[Callable[[], bool]] = None, **kwargs: Any):
        """llama-cpp-python's create_chat_completion (same arguments, same return shapes, streaming
        included) with image_url, input_audio and video_url parts. The OmniSIFT arguments override
        the constructor's for this call; ``usage["omnisift"]`` (on the last chunk when streaming)
        holds the token counts, the retention used, timings and what was reused from the context.
        ``on_unit(pyomnisift.UnitRecord)`` is called per compression unit decoded (not for media
        reused from the context); ``progress(stage, done, total)`` through the stages "plan" (media
        items probed), "encode" (compression units), "prefill" (positions decoded), "generate"
        (tokens; the last call has done == total);
        ``should_stop()`` is polled after every generated token and ends the generation when true
        (the server's way to stop a stream whose client left: llama-cpp-python may generate many
        tokens before it yields the next chunk)."""
        if len(args) > len(_CHAT_ARGS):
            raise TypeError(f"create_chat_completion takes at most {len(_CHAT_ARGS) + 1} positional arguments")
        call = dict(zip(_CHAT_ARGS, args))
        for k, v in kwargs.items():
            if k not in _CHAT_ARGS:
                raise TypeError(f"create_chat_completion() got an unexpected keyword argument {k!r}")
            if k in call:
                raise TypeError(f"create_chat_completion() got multiple values for argument {k!r}")
            call[k] = v
        defaults = {k: p.default for k, p in inspect.signature(llama_cpp.Llama.create_chat_completion).parameters.items()
                    if k in _CHAT_ARGS}
        settings = self.chat_handler.settings.with_overrides(dict(
            video_retention=with_pruning_rate(video_retention, video_pruning_rate), audio_retention=audio_retention,
            image_retention=image_retention,
            audio_selector=audio_selector, video_fps=video_fps, fit_context=fit_context, seed=sift_seed))
        return self.chat_handler(llama=self, messages=messages, settings=settings, on_unit=on_unit,
                                 progress=progress, should_stop=should_stop, **{**defaults, **call})

    def close(self) -> None:
        if "_stack" in self.__dict__:   # not when the constructor failed before llama_cpp.Llama's ran
            super().close()

    def __enter__(self) -> "Llama":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LoadProgress:
    """llama.cpp's load progress callback, reporting ``progress("load", done, TOTAL)``. An exception
    in ``progress`` (Ctrl-C included) cannot cross the C callback: it is kept, the load is
    cancelled (the callback returns false) and the constructor raises it."""

    TOTAL = 100

    def __init__(self, progress: Callable[[str, int, int], None], share: float):
        self.progress, self.share, self.error = progress, share, None
        self.c_callback = llama_cpp.llama_progress_callback(self._call)   # referenced while C may call it

    def _call(self, fraction: float, user_data) -> bool:
        try:
            self.progress("load", int(fraction * self.share * self.TOTAL), self.TOTAL)
            return True
        except BaseException as e:   # noqa: B036 - handed to the constructor, which raises it
            self.error = e
            return False

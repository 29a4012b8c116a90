"""Reading what a GGUF model pair is, before llama.cpp loads it.

llama.cpp reports a bad file through its log and a NULL pointer (or, for some inconsistencies, an
abort), so the facts that matter to us are checked here first, from the GGUF header, and reported
as exceptions that name the file and the problem.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional


from ._errors import ModelFileError
from ._families import family_of
from ._gguf import GGUFFormatError, read_metadata


@dataclasses.dataclass(frozen=True)
class LLMInfo:
    path: str
    architecture: str
    n_embd: int
    rope_sections: Optional[tuple]  # M-RoPE sections (t, h, w, extra), None for ordinary RoPE

    @property
    def uses_mrope(self) -> bool:
        return self.rope_sections is not None


@dataclasses.dataclass(frozen=True)
class MmprojInfo:
    path: str
    projector_type: str
    has_vision: bool
    has_audio: bool
    vision_projection_dim: Optional[int]
    audio_projection_dim: Optional[int]
    vision_projector: Optional[str]   # each tower's projector type as clip.cpp resolves it, None: no tower
    audio_projector: Optional[str]
    n_deepstack: int = 0              # vision layers whose features feed the LLM's first layers (Qwen3-VL's tower)


def _metadata(path, what: str) -> dict:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise ModelFileError(path, f"{what} path is a directory, expected a .gguf file")
    try:
        # the vocabulary (tokenizer.*) is most of the metadata and none of our business here
        return read_metadata(path, keep=lambda key: not key.startswith("tokenizer."))
    except GGUFFormatError as e:
        raise ModelFileError(path, f"{what} is not a readable GGUF file: {e}") from e


def read_llm_info(path) -> LLMInfo:
    kv = _metadata(path, "model")
    arch = kv.get("general.architecture")
    if not arch:
        raise ModelFileError(path, "model has no general.architecture")
    if arch == "clip":
        raise ModelFileError(path, "this is a multimodal projector (mmproj), not a language model: "
                                   "pass it as mmproj_path")
    n_embd = kv.get(f"{arch}.embedding_length")
    if n_embd is None:
        raise ModelFileError(path, f"model has no {arch}.embedding_length")
    sections = kv.get(f"{arch}.rope.dimension_sections")
    return LLMInfo(os.fspath(path), arch, int(n_embd),
                   tuple(int(s) for s in sections) if sections is not None else None)


def read_mmproj_info(path) -> MmprojInfo:
    kv = _metadata(path, "mmproj")
    arch = kv.get("general.architecture")
    if arch != "clip":
        raise ModelFileError(path, f"not a multimodal projector: general.architecture is {arch!r}, "
                                   "expected 'clip' (is this the language model?)")
    has_vision = bool(kv.get("clip.has_vision_encoder"))
    has_audio = bool(kv.get("clip.has_audio_encoder"))
    ptype = kv.get("clip.projector_type") or kv.get("clip.vision.projector_type") or ""
    v_dim = kv.get("clip.vision.projection_dim") if has_vision else None
    a_dim = kv.get("clip.audio.projection_dim") if has_audio else None
    # clip.cpp: one clip.projector_type for every tower, else one per tower (mixed-modality files
    # such as Qwen3-Omni's)
    v_proj = str(kv.get("clip.projector_type") or kv.get("clip.vision.projector_type") or "") if has_vision else None
    a_proj = str(kv.get("clip.projector_type") or kv.get("clip.audio.projector_type") or "") if has_audio else None
    deepstack = kv.get("clip.vision.is_deepstack_layers") if has_vision else None
    return MmprojInfo(os.fspath(path), str(ptype), has_vision, has_audio,
                      int(v_dim) if v_dim is not None else None,
                      int(a_dim) if a_dim is not None else None, v_proj, a_proj,
                      sum(bool(x) for x in deepstack) if deepstack is not None else 0)


def check_pair(model_path, mmproj_path) -> tuple[LLMInfo, MmprojInfo]:
    """Checks that an mmproj can feed a model and that pyomnisift serves their family
    (``_families.SUPPORTED``); raises naming the file and the mismatch."""
    llm = read_llm_info(model_path)
    mm = read_mmproj_info(mmproj_path)
    family_of(llm, mm)
    for kind, dim in (("vision", mm.vision_projection_dim), ("audio", mm.audio_projection_dim)):
        if dim is not None and dim != llm.n_embd:
            raise ModelFileError(
                mmproj_path,
                f"its {kind} projector outputs rows of width {dim}, but the model {llm.path} has "
                f"embedding width {llm.n_embd}: this mmproj belongs to another model")
    return llm, mm


__all__ = ["LLMInfo", "MmprojInfo", "read_llm_info", "read_mmproj_info", "check_pair"]

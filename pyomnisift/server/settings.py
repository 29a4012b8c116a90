"""Settings of the server: llama_cpp.server's ServerSettings (host, port, api_key, ssl, ...) plus the
media policy, and the model settings pyomnisift.Llama takes. Every field is a flag
(`--n_ctx 8192`) and an environment variable (`N_CTX=8192`), as in llama_cpp.server."""

from __future__ import annotations

from typing import Literal, Optional

from llama_cpp.server.settings import ServerSettings as _LlamaServerSettings
from pydantic import Field
from pydantic_settings import BaseSettings

from .._settings import AUDIO_SELECTORS, RETENTION_MAX, RETENTION_MIN


class ModelSettings(BaseSettings):
    """What pyomnisift.Llama is loaded with."""

    model: str = Field(description="The LLM GGUF (the Qwen2.5-Omni thinker).")
    mmproj: Optional[str] = Field(default=None, description="The mmproj GGUF (vision and audio towers).")
    model_alias: Optional[str] = Field(default=None, description="The model id /v1/models reports "
                                       "(default: the model file's name).")
    n_ctx: int = Field(default=8192, ge=0, description="The context size.")
    n_gpu_layers: int = Field(default=0, ge=-1, description="Layers offloaded to the GPU; -1: all.")
    n_threads: Optional[int] = Field(default=None, ge=1, description="CPU threads (default: llama.cpp's).")
    n_batch: int = Field(default=1024, ge=1, description="The batch size.")
    flash_attn: bool = Field(default=False, description="Whether to use flash attention.")
    seed: Optional[int] = Field(default=None, description="Default sampling seed.")
    video_retention: Optional[float] = Field(default=None, ge=RETENTION_MIN, le=RETENTION_MAX,
                                             description="Default fraction of video tokens kept (library default 0.33).")
    audio_retention: Optional[float] = Field(default=None, ge=RETENTION_MIN, le=RETENTION_MAX,
                                             description="Default fraction of audio tokens kept (library default 0.6).")
    image_retention: Optional[float] = Field(default=None, ge=RETENTION_MIN, le=RETENTION_MAX,
                                             description="Default fraction of image tokens kept (1.0).")
    audio_selector: Optional[Literal[tuple(AUDIO_SELECTORS)]] = Field(
        default=None, description="Default audio selector (anchor; vgas needs sift_head).")
    sift_head: Optional[str] = Field(default=None, description="The learned selector head GGUF (pyomnisift convert-head).")
    video_fps: float = Field(default=2.0, gt=0, description="Frames sampled per second of video.")
    verbose: bool = Field(default=False, description="llama.cpp's own log on stderr.")


class ServerSettings(_LlamaServerSettings):
    """llama_cpp.server's server settings, and what may reach the model from a request."""

    allowed_media_dir: Optional[str] = Field(
        default=None, description="A directory whose files requests may name by local path or file:// URL "
        "(default: none; only data: URIs).")
    max_body_bytes: int = Field(default=100 * 1024 * 1024, ge=1,
                                description="Largest request body accepted, in bytes (413 beyond).")


class Settings(ServerSettings, ModelSettings):
    pass

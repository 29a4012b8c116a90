"""Settings of the server: llama_cpp.server's ServerSettings (host, port, api_key, ssl, ...) plus the
media policy, and the model settings pyomnisift.Llama takes. Every field is a flag
(`--n_ctx 8192`) and an environment variable (`N_CTX=8192`), as in llama_cpp.server."""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Tuple

from llama_cpp.server.settings import ServerSettings as _LlamaServerSettings
from pydantic import Field
from pydantic_settings import BaseSettings

from .._settings import AUDIO_SELECTORS, RETENTION_MAX, RETENTION_MIN
from .limits import LimitSettings


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
    video_pruning_rate: Optional[float] = Field(default=None, ge=RETENTION_MIN, le=RETENTION_MAX,
                                                description="vLLM's name for 1 - video_retention (not both).")
    audio_retention: Optional[float] = Field(default=None, ge=RETENTION_MIN, le=RETENTION_MAX,
                                             description="Default fraction of audio tokens kept (library default 0.6).")
    image_retention: Optional[float] = Field(default=None, ge=RETENTION_MIN, le=RETENTION_MAX,
                                             description="Default fraction of image tokens kept (1.0).")
    audio_selector: Optional[Literal[tuple(AUDIO_SELECTORS)]] = Field(
        default=None, description="Default audio selector (anchor; vgas needs sift_head).")
    sift_head: Optional[str] = Field(default=None, description="The learned selector head GGUF (pyomnisift convert-head).")
    video_fps: float = Field(default=2.0, gt=0, description="Frames sampled per second of video.")
    logits_all: bool = Field(default=False, description="Keep the logits of every position, as "
                             "llama_cpp.server's setting of that name: needed for logprobs (costs n_ctx x "
                             "n_vocab floats of memory, so off by default, unlike llama_cpp.server).")
    verbose: bool = Field(default=False, description="llama.cpp's own log on stderr.")
    cache: bool = Field(default=False, description="Use the media cache: the state of a prompt up to each "
                        "decoded media item is kept, so that the same media (after the same text, with the "
                        "same settings) in another conversation skips the encoders.")
    cache_type: Literal["ram", "disk"] = Field(default="ram", description="The media cache's kind: in memory, "
                                               "or on disk in cache_dir (kept across restarts). Only used if cache is True.")
    cache_size: int = Field(default=2 << 30, gt=0, description="The media cache's budget in bytes. Only used if "
                            "cache is True.")
    cache_dir: Optional[str] = Field(default=None, description="The disk cache's directory (default: "
                                     "$PYOMNISIFT_CACHE/media-cache, or ~/.cache/pyomnisift/media-cache).")


class ServerSettings(_LlamaServerSettings, LimitSettings):
    """llama_cpp.server's server settings, what may reach the model from a request (the media
    folder) and how much work a request may cause (limits.py)."""

    allowed_media_dir: Optional[str] = Field(
        default=None, description="A directory whose files requests may name by local path or file:// URL "
        "(default: none; only data: URIs).")
    cors_origins: Optional[List[str]] = Field(
        default=None, description="Origins a browser may call the server from (CORS), e.g. "
        "https://app.example.com, or * for any (default: none, no CORS headers).")


class Settings(ServerSettings, ModelSettings):
    pass


def load_config_file(path: str, overrides: Optional[Dict[str, Any]] = None) -> Tuple[ServerSettings, ModelSettings]:
    """A settings file as llama_cpp.server's `--config_file` reads it (JSON, or YAML for .yaml / .yml):
    the server's settings at the top level and the model's in `models`, a list of one (this server
    holds one model); the model's fields may also sit at the top level. `overrides` (the flags given
    on the command line) win over the file. Raises ValueError naming the problem."""
    import json

    try:
        with open(path, "rb") as f:
            if path.endswith((".yaml", ".yml")):
                import yaml

                data = yaml.safe_load(f)
            else:
                data = json.loads(f.read())
    except FileNotFoundError:
        raise ValueError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the config file {path}: {e}") from None
    except Exception as e:   # json.JSONDecodeError, yaml.YAMLError
        raise ValueError(f"the config file {path} is not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: "
                         f"{str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the config file {path} must hold an object (settings by name)")
    data = dict(data)
    models = data.pop("models", None)
    if models is not None:
        if not isinstance(models, list) or len(models) != 1 or not isinstance(models[0], dict):
            raise ValueError(f"the config file {path}: `models` must be a list of exactly one model's settings "
                             "(this server holds one model)")
        data.update(models[0])
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"the config file {path}: unknown setting(s) {', '.join(unknown)}")
    data.update(overrides or {})
    server = ServerSettings.model_validate({k: v for k, v in data.items() if k in ServerSettings.model_fields})
    model = ModelSettings.model_validate({k: v for k, v in data.items() if k in ModelSettings.model_fields})
    return server, model

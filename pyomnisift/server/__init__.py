"""pyomnisift's OpenAI-compatible server (the `[server]` extra): `pyomnisift serve` or
`python -m pyomnisift.server --model M --mmproj P`.

Split as llama_cpp.server is: settings (pydantic-settings, flags generated from them), types (the
request models, with omni content parts), model (the one loaded model and its lock), app (FastAPI
routes, SSE streaming through sse-starlette, OpenAI-shaped errors).
"""

from .app import create_app
from .settings import ModelSettings, ServerSettings, Settings

__all__ = ["create_app", "ModelSettings", "ServerSettings", "Settings"]

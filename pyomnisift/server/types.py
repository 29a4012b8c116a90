"""Request models: llama_cpp.server's CreateChatCompletionRequest with omni messages (content parts
text, image_url, input_audio, video_url) and the OmniSIFT knobs as extra top-level body fields."""

from __future__ import annotations

from typing import Annotated, List, Literal, Optional, Union

from llama_cpp.server.types import CreateChatCompletionRequest
from pydantic import BaseModel, ConfigDict, Field

from .._settings import AUDIO_SELECTORS, RETENTION_MAX, RETENTION_MIN


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPart(_Part):
    type: Literal["text"]
    text: str


class MediaUrl(_Part):
    url: str


class ImageUrlPart(_Part):
    type: Literal["image_url"]
    image_url: Union[MediaUrl, str]


class VideoUrlPart(_Part):
    type: Literal["video_url"]
    video_url: Union[MediaUrl, str]


class InputAudio(_Part):
    data: str = Field(description="base64 audio bytes (or a data: URI)")
    format: str = Field(default="wav", description="wav, mp3, flac, ogg, m4a, ...")


class InputAudioPart(_Part):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[Union[TextPart, ImageUrlPart, VideoUrlPart, InputAudioPart], Field(discriminator="type")]


class OmniMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "function", "developer"]
    content: Union[str, List[ContentPart], None] = None


Retention = Optional[Annotated[float, Field(ge=RETENTION_MIN, le=RETENTION_MAX)]]


class OmniChatCompletionRequest(CreateChatCompletionRequest):
    """OpenAI's chat request as llama_cpp.server takes it, plus (top-level, all optional) the
    OmniSIFT settings for this request: video_retention, audio_retention, image_retention,
    audio_selector, fit_context."""

    messages: List[OmniMessage] = Field(min_length=1, description="The conversation; omni content parts.")
    video_retention: Retention = Field(default=None, description="Fraction of each frame grid's tokens kept.")
    audio_retention: Retention = Field(default=None, description="Fraction of each 2-s chunk's audio tokens kept.")
    image_retention: Retention = Field(default=None, description="Fraction of an image's tokens kept.")
    audio_selector: Optional[Literal[tuple(AUDIO_SELECTORS)]] = Field(default=None)
    fit_context: Optional[bool] = Field(default=None, description="Lower the retentions to fit n_ctx.")


OMNISIFT_FIELDS = ("video_retention", "audio_retention", "image_retention", "audio_selector", "fit_context")

"""Request models: llama_cpp.server's CreateChatCompletionRequest with omni messages (content parts
text, image_url, input_audio, video_url and llama-server's input_video) and the OmniSIFT knobs as
extra top-level body fields; its CreateCompletionRequest; OpenAI's stream_options; llama-server's
/tokenize and /detokenize bodies."""

from __future__ import annotations

from typing import Annotated, List, Literal, Optional, Union

from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest
from pydantic import BaseModel, ConfigDict, Field, field_validator

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


class InputVideo(_Part):
    data: Optional[str] = Field(default=None, description="base64 video bytes (no data: prefix)")
    url: Optional[str] = Field(default=None, description="a data: URI or a path, as video_url.url")


class InputVideoPart(_Part):
    """llama-server's name for a video part: {"type": "input_video", "input_video": {"data": base64}}
    (or {"url": ...}, or the url as a plain string). Read as the video_url part it stands for."""
    type: Literal["input_video"]
    input_video: Union[InputVideo, str]

    def as_video_url(self) -> VideoUrlPart:
        v = self.input_video
        if isinstance(v, str):
            url = v
        elif (v.data is None) == (v.url is None):
            raise ValueError("input_video needs exactly one of data (base64) and url")
        else:
            url = v.url if v.url is not None else "data:video/mp4;base64," + v.data
        return VideoUrlPart(type="video_url", video_url=MediaUrl(url=url))


class InputAudio(_Part):
    data: str = Field(description="base64 audio bytes (or a data: URI)")
    format: str = Field(default="wav", description="wav, mp3, flac, ogg, m4a, ...")


class InputAudioPart(_Part):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[Union[TextPart, ImageUrlPart, VideoUrlPart, InputAudioPart, InputVideoPart],
                        Field(discriminator="type")]


class OmniMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "function", "developer"]
    content: Union[str, List[ContentPart], None] = None

    @field_validator("content")
    @classmethod
    def _input_video_as_video_url(cls, content):
        # One name per kind of part downstream: the media policy sees every video as video_url.
        if isinstance(content, list):
            content = [p.as_video_url() if isinstance(p, InputVideoPart) else p for p in content]
        return content


Retention = Optional[Annotated[float, Field(ge=RETENTION_MIN, le=RETENTION_MAX)]]


class StreamOptions(BaseModel):
    include_usage: bool = Field(default=False, description="Send a last chunk with the usage and no choices "
                                "(OpenAI's stream_options).")


class OmniChatCompletionRequest(CreateChatCompletionRequest):
    """OpenAI's chat request as llama_cpp.server takes it, plus (top-level, all optional) the
    OmniSIFT settings for this request: video_retention (or vLLM's video_pruning_rate), audio_retention,
    image_retention, audio_selector, fit_context."""

    messages: List[OmniMessage] = Field(min_length=1, description="The conversation; omni content parts.")
    video_retention: Retention = Field(default=None, description="Fraction of each frame grid's tokens kept.")
    video_pruning_rate: Retention = Field(default=None, description="vLLM's name for 1 - video_retention "
                                          "(not both).")
    audio_retention: Retention = Field(default=None, description="Fraction of each 2-s chunk's audio tokens kept.")
    image_retention: Retention = Field(default=None, description="Fraction of an image's tokens kept.")
    audio_selector: Optional[Literal[tuple(AUDIO_SELECTORS)]] = Field(default=None)
    fit_context: Optional[bool] = Field(default=None, description="Lower the retentions to fit n_ctx.")
    stream_options: Optional[StreamOptions] = Field(default=None)


class OmniCompletionRequest(CreateCompletionRequest):
    """OpenAI's (legacy) text completion request as llama_cpp.server takes it, plus stream_options."""

    stream_options: Optional[StreamOptions] = Field(default=None)


class TokenizeRequest(BaseModel):
    """llama-server's /tokenize body."""
    content: str = Field(description="The text to tokenize.")
    add_special: bool = Field(default=False, description="Add the model's BOS token, as llama-server.")
    parse_special: bool = Field(default=True, description="Read special tokens' text as those tokens.")
    with_pieces: bool = Field(default=False, description="Return [{id, piece}] instead of ids.")


class DetokenizeRequest(BaseModel):
    """llama-server's /detokenize body."""
    tokens: List[int] = Field(description="Token ids.")


OMNISIFT_FIELDS = ("video_retention", "video_pruning_rate", "audio_retention", "image_retention", "audio_selector",
                   "fit_context")

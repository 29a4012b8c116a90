"""Exceptions raised by pyomnisift."""

from __future__ import annotations


class OmniSiftError(RuntimeError):
    """A failure inside libomnisift or the ggml backend it computes on."""


class ModelFileError(OmniSiftError, ValueError):
    """A model, mmproj, head or media file is unreadable, of the wrong kind, or inconsistent."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsupportedModelError(ModelFileError):
    """A model pair of a family pyomnisift does not serve (llama-cpp-python's own chat handlers may)."""

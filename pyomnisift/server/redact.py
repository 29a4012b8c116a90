"""What an error body may say about the machine: nothing. Library errors name files by their path
and in-memory sources by their repr; a client learns which part failed and why, not where the server
keeps its model, its media or its temporary files, nor the addresses of its objects."""

from __future__ import annotations

import os
import re
from typing import Iterable, Optional

_REPR = re.compile(r"<[A-Za-z_][\w.]* object at 0x[0-9a-fA-F]+>")
# An absolute POSIX path (optionally as a file:// URL): slash-led non-empty names, not inside a word,
# a relative path or another URL ("1/2", "a/b", "http://h/p" are left alone).
_PATH = re.compile(r"(?<![\w.~/:-])(?:file://)?(/[^\s'\"<>(),;/]+(?:/[^\s'\"<>(),;/]+)*/?)")


def redact(message: str, roots: Iterable[Optional[str]] = ()) -> str:
    """`message` with object reprs replaced by "the inline data", and absolute paths by their part
    under one of `roots` (the allowed media directory: the name the client sent), else by their
    file name."""
    message = _REPR.sub("the inline data", message)
    real_roots = sorted({os.path.realpath(r) for r in roots if r} | {r for r in roots if r}, key=len, reverse=True)

    def shorten(m: re.Match) -> str:
        path = m.group(1)
        for root in real_roots:
            prefix = root.rstrip("/") + "/"
            if path.startswith(prefix):
                return path[len(prefix):]
        name = os.path.basename(path.rstrip("/"))
        return name or "the path"

    return _PATH.sub(shorten, message)

"""Where the bytes of a media content part come from: the one rule for every part (image_url,
video_url, input_audio) in the library and in the server.

A source is either inline bytes (a ``data:`` URI, or base64 in ``input_audio.data``) or a local
file (a path, or a ``file://`` URL). It is resolved once, here, into a `Resolved` (bytes, or the
file's real path) that nothing downstream reinterprets: a ``file://`` URL is percent-decoded exactly
once, a plain path never (``my%20song.mp3`` is that file), and the server hands the library
`Resolved` values, so no name is decoded a second time (a file named ``a%2F..%2Fb`` stays inside
its folder).

Policies:

* `LIBRARY` (the default of pyomnisift.Llama, the caller's own process): any readable file, relative
  paths against the working directory (image_url / video_url).
* `MediaPolicy.server(allowed_dir)`: a file only under `allowed_dir` (its real path, symlinks
  followed, must stay inside; a relative URL is taken relative to that folder, never to the working
  directory); without a folder, no file at all. A file outside, missing, unreadable or not a regular
  file gets the same message (no existence oracle), and messages never carry absolute paths.

``input_audio.data`` is a ``data:`` URI, a ``file://`` URL or an absolute path, else base64, under
every policy: a string such as ``secret//clip`` (base64 characters) is decoded as base64, never
opened as a file relative to the working directory.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import os
import re
import stat
import urllib.parse
from typing import Optional, Union

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class MediaSourceError(ValueError):
    """A media reference the policy refuses, or one that holds no bytes."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A media source already checked by a policy: bytes, or the real path of a regular file."""

    data: Optional[bytes]
    path: Optional[str]
    label: str               # what error messages name: never an absolute path under the server policy

    def open_source(self) -> Union[str, io.BytesIO]:
        """What the decoders (PyAV, PIL) take: the path, or a BytesIO over the bytes (no copy)."""
        return io.BytesIO(self.data) if self.data is not None else self.path


@dataclasses.dataclass(frozen=True)
class MediaPolicy:
    """Which local files a request may name. `allowed_dir` None and `any_file` False: none."""

    allowed_dir: Optional[str] = None    # real path of the only folder files may come from
    any_file: bool = False               # the library: the caller's own files, anywhere

    @staticmethod
    def server(allowed_dir: Optional[str]) -> "MediaPolicy":
        return MediaPolicy(os.path.realpath(allowed_dir) if allowed_dir is not None else None, False)


LIBRARY = MediaPolicy(None, True)


def _not_available(what: str, policy: MediaPolicy) -> MediaSourceError:
    if policy.allowed_dir is None:
        return MediaSourceError(f"{what}: local files are not accepted by this server; send the bytes as a "
                                "data: URI (or start the server with --allowed_media_dir DIR)")
    # One text for outside, missing, unreadable and not-a-file: the answer says nothing about what
    # exists on the server's disk.
    return MediaSourceError(f"{what}: no readable media file of that name in the server's allowed media "
                            "folder (--allowed_media_dir)")


def _decode_base64(what: str, payload: str) -> bytes:
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MediaSourceError(f"{what}: data is not valid base64 ({e})") from None
    if not data:
        raise MediaSourceError(f"{what}: the data (data URI or base64) is empty")
    return data


def _data_uri(url: str, what: str) -> Resolved:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise MediaSourceError(f"{what}: a data URI must be base64-encoded (data:<mime>;base64,...)")
    data = _decode_base64(what, payload)
    return Resolved(data, None, f"{header[:64]},... ({len(data)} bytes)")


def _file(path: str, what: str, policy: MediaPolicy) -> Resolved:
    """A local path (already URL-decoded if it came as a URL) -> its real path, under the policy."""
    if "\x00" in path:
        if policy.any_file:
            raise FileNotFoundError(f"{what} file not found: {path!r}")
        raise _not_available(what, policy)
    if policy.any_file:
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
        return Resolved(None, os.path.realpath(path), path)
    root = policy.allowed_dir
    if root is None:
        raise _not_available(what, policy)
    real = os.path.realpath(os.path.join(root, path))    # an absolute `path` replaces root
    try:
        inside = os.path.commonpath([root, real]) == root and real != root
        st = os.stat(real) if inside else None
    except (OSError, ValueError):
        st = None
    if st is None or not stat.S_ISREG(st.st_mode) or not os.access(real, os.R_OK):
        raise _not_available(what, policy)
    return Resolved(None, real, os.path.relpath(real, root))


def resolve_url(url, what: str, policy: MediaPolicy = LIBRARY) -> Resolved:
    """An image_url / video_url: a data: URI, a file:// URL (decoded once) or a path (not decoded)."""
    if isinstance(url, Resolved):
        return url
    if not isinstance(url, str) or not url:
        raise MediaSourceError(f"{what}: url must be a non-empty string, got {type(url).__name__}")
    if url.startswith("data:"):
        return _data_uri(url, what)
    if url.startswith("file://"):
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise MediaSourceError(f"{what}: file:// URLs name local files only (file:///path)")
        return _file(urllib.parse.unquote(parsed.path), what, policy)
    if _SCHEME.match(url):
        raise MediaSourceError(f"{what}: remote URLs are not fetched ({url.split(':', 1)[0]}:; pyomnisift reads "
                               "nothing from the network); send the bytes as a data: URI")
    return _file(url, what, policy)


def resolve_audio(data, fmt: str, what: str, policy: MediaPolicy = LIBRARY) -> Resolved:
    """An input_audio's data: a data: URI, a file:// URL or an absolute path; anything else is base64."""
    if isinstance(data, Resolved):
        return data
    if not isinstance(data, str) or not data:
        raise MediaSourceError(f"{what}: input_audio.data must be a non-empty string")
    if data.startswith(("data:", "file://")) or os.path.isabs(data):
        return resolve_url(data, what, policy)
    raw = _decode_base64(what, data)
    return Resolved(raw, None, f"{what} (base64 {fmt}, {len(raw)} bytes)")

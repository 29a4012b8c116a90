"""Caches of prompt states that end with media: where the KV state of a prompt up to a decoded media
item is kept, so that a video asked about again (in another conversation, or after a restart) is
restored instead of encoded.

The caches store opaque bytes under opaque keys; what a key means (the model, the llama.cpp build, the
KV type, the exact prefix) and what the bytes are (llama.cpp's sequence state) is _state_cache.py's.
``MediaRAMCache`` keeps entries in memory, ``MediaDiskCache`` in a directory (a file per entry, safe
to share between processes: an entry is visible only once written whole). Both evict the least
recently used entries beyond their byte budget.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import tempfile
import threading
import time
import warnings
from typing import Optional, Union

DEFAULT_CAPACITY = 2 << 30      # bytes, as llama_cpp.server's cache_size

_MAGIC = b"OMSIFTS1"             # the format of a disk entry: magic, sha256 of the payload, payload


class MediaCache:
    """The interface the context uses: bytes by key, least recently used evicted first."""

    capacity_bytes: int

    def get(self, key: bytes) -> Optional[bytes]:
        raise NotImplementedError

    def put(self, key: bytes, value: bytes) -> None:
        raise NotImplementedError

    def __contains__(self, key: bytes) -> bool:
        raise NotImplementedError

    def discard(self, key: bytes) -> None:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        raise NotImplementedError


def _capacity(capacity_bytes: int) -> int:
    if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes <= 0:
        raise ValueError(f"capacity_bytes must be a positive number of bytes, got {capacity_bytes!r}")
    return capacity_bytes


class MediaRAMCache(MediaCache):
    """Entries in this process's memory, at most ``capacity_bytes`` in all (an entry larger than that
    is not kept)."""

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY):
        self.capacity_bytes = _capacity(capacity_bytes)
        self._entries: "collections.OrderedDict[bytes, bytes]" = collections.OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Optional[bytes]:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: bytes, value: bytes) -> None:
        if len(value) > self.capacity_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= len(old)
            while self._entries and self._nbytes + len(value) > self.capacity_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._nbytes -= len(evicted)
            self._entries[key] = value
            self._nbytes += len(value)

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            return key in self._entries

    def discard(self, key: bytes) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= len(old)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._nbytes


class MediaDiskCache(MediaCache):
    """Entries in ``directory`` (created if missing), one file each, at most ``capacity_bytes`` in all.
    Every entry carries the sha256 of its bytes: a truncated or corrupt one is ignored with a warning
    and removed. Several processes may share the directory: an entry is written to a temporary file
    and renamed into place whole, so a reader sees the whole entry or none.

    (Plain files rather than ``diskcache``, which llama-cpp-python's ``LlamaDiskCache`` uses: its
    culling evicts ten entries at a time, the one just stored among them when a few large states fill
    the budget.)"""

    _SUFFIX = ".state"
    _STALE_TMP_S = 3600      # a temporary file this old is a writer that died: removed

    def __init__(self, directory: Union[str, os.PathLike], capacity_bytes: int = DEFAULT_CAPACITY):
        self.capacity_bytes = _capacity(capacity_bytes)
        self.directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(f"the cache directory {self.directory} is a file, not a directory")
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create the media cache directory {self.directory}: {e.strerror}") from None
        if not os.access(self.directory, os.R_OK | os.W_OK | os.X_OK):
            raise ValueError(f"the media cache directory {self.directory} is not writable")

    def _path(self, key: bytes) -> str:
        return os.path.join(self.directory, key.hex() + self._SUFFIX)

    def get(self, key: bytes) -> Optional[bytes]:
        path = self._path(key)
        try:
            with open(path, "rb") as f:    # an open file stays whole if another process removes it
                data = f.read()
        except FileNotFoundError:
            return None
        head = len(_MAGIC) + 32
        if (len(data) < head or data[:len(_MAGIC)] != _MAGIC
                or hashlib.sha256(memoryview(data)[head:]).digest() != data[len(_MAGIC):head]):
            warnings.warn(f"media cache: a truncated or corrupt entry ({path}) was ignored and removed", stacklevel=2)
            self.discard(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)                 # the least recently used go first
        return data[head:]

    def put(self, key: bytes, value: bytes) -> None:
        if len(value) + len(_MAGIC) + 32 > self.capacity_bytes:
            return
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + hashlib.sha256(value).digest())
                f.write(value)
            os.replace(tmp, self._path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._evict(keep=self._path(key))

    def _entries(self) -> list:
        """(mtime, size, path) of the entries, and stale temporary files removed on the way."""
        out, now = [], time.time()
        with os.scandir(self.directory) as it:
            for e in it:
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                if e.name.endswith(self._SUFFIX):
                    out.append((st.st_mtime, st.st_size, e.path))
                elif e.name.endswith(".tmp") and now - st.st_mtime > self._STALE_TMP_S:
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)
        return out

    def _evict(self, keep: str) -> None:
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.capacity_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size

    def __contains__(self, key: bytes) -> bool:
        return os.path.exists(self._path(key))

    def discard(self, key: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def __len__(self) -> int:
        return len(self._entries())

    @property
    def nbytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

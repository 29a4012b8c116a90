"""Reading GGUF metadata (key/values) without the tensors.

gguf.GGUFReader maps every tensor and builds a numpy view per string: about 6 s for the 150k-token
vocabulary of a Qwen model, paid on every model load. This walks the key/value section of a
memory-mapped file once and decodes only the values asked for.
"""

from __future__ import annotations

import mmap
import os
import struct

# GGUF value types (gguf.GGUFValueType)
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(13)
_SCALAR = {_UINT8: "<B", _INT8: "<b", _UINT16: "<H", _INT16: "<h", _UINT32: "<I", _INT32: "<i",
           _FLOAT32: "<f", _BOOL: "<?", _UINT64: "<Q", _INT64: "<q", _FLOAT64: "<d"}


class GGUFFormatError(ValueError):
    pass


def read_metadata(path, keep=None) -> dict:
    """{key: value} of the file's metadata (arrays as lists); with `keep`, a predicate on the key,
    only the values it accepts are decoded (the others are skipped, not read)."""
    return _read(path, keep, tensors=False)[0]


def read_tensor_infos(path) -> list:
    """[(name, ne (ggml's dims, ne0 first), ggml type id)] of the file's tensors, without their data."""
    return _read(path, lambda key: False, tensors=True)[1]


def _read(path, keep, tensors: bool):
    wanted = keep or (lambda key: True)
    with open(os.fspath(path), "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as e:  # an empty file cannot be mapped
            raise GGUFFormatError("the file is empty") from e
    try:
        return _parse(data, wanted, tensors)
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise GGUFFormatError(f"truncated or corrupt metadata ({e})") from e
    finally:
        data.close()


def _parse(data, wanted, tensors: bool = False):
    if data[:4] != b"GGUF":
        raise GGUFFormatError(f"not a GGUF file (starts with {bytes(data[:4])!r})")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise GGUFFormatError(f"GGUF version {version} is not supported")
    pos, out = 24, {}

    def string(p):
        (n,) = struct.unpack_from("<Q", data, p)
        if p + 8 + n > len(data):
            raise struct.error("string past the end of the file")
        return p + 8 + n, (p + 8, p + 8 + n)

    def value(vtype, p, keep):
        if vtype == _STRING:
            p, (a, b) = string(p)
            return p, (bytes(data[a:b]).decode("utf-8") if keep else None)
        if vtype == _ARRAY:
            etype, count = struct.unpack_from("<IQ", data, p)
            p += 12
            if etype in _SCALAR:
                size = struct.calcsize(_SCALAR[etype])
                if p + size * count > len(data):
                    raise struct.error("array past the end of the file")
                items = list(struct.unpack_from(f"<{count}{_SCALAR[etype][1]}", data, p)) if keep else None
                return p + size * count, items
            items = [] if keep else None
            for _ in range(count):
                p, item = value(etype, p, keep)
                if keep:
                    items.append(item)
            return p, items
        if vtype not in _SCALAR:
            raise GGUFFormatError(f"unknown value type {vtype}")
        return p + struct.calcsize(_SCALAR[vtype]), struct.unpack_from(_SCALAR[vtype], data, p)[0]

    for _ in range(n_kv):
        pos, (a, b) = string(pos)
        key = bytes(data[a:b]).decode("utf-8")
        (vtype,) = struct.unpack_from("<I", data, pos)
        keep = wanted(key)
        pos, v = value(vtype, pos + 4, keep)
        if keep:
            out[key] = v
    infos = []
    for _ in range(n_tensors if tensors else 0):   # name, n_dims, ne[n_dims], type, data offset
        pos, (a, b) = string(pos)
        (n_dims,) = struct.unpack_from("<I", data, pos)
        if n_dims > 4:
            raise GGUFFormatError(f"tensor with {n_dims} dimensions")
        ne = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
        (ttype,) = struct.unpack_from("<I", data, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 4 + 8
        infos.append((bytes(data[a:b]).decode("utf-8"), tuple(ne), ttype))
    return out, infos

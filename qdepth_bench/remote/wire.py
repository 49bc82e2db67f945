"""The wire format of openpi's policy servers: msgpack, with numpy arrays as maps of raw bytes.

An array travels as {b"__ndarray__": True, b"data": bytes, b"dtype": dtype string, b"shape": shape} and a
numpy scalar as {b"__npgeneric__": True, b"data": value, b"dtype": dtype string}, so openpi's own client
and server read what we write and the reverse. Object, void and complex arrays are refused: they would
need pickle, which must never run on data from the network.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

REFUSED_KINDS = ("V", "O", "c")

#: a request that carries a whole batch of episodes (our extension; openpi's requests are one observation)
BATCH_KEY = "qdepth_bench/batch"
#: camera role -> openpi's observation key
OPENPI_CAMERAS = {"main": "observation/image", "wrist": "observation/wrist_image"}


def encode_numpy(obj: Any) -> Any:
    """msgpack `default`: a numpy array or scalar as its openpi map; anything else unchanged."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in REFUSED_KINDS:
        raise ValueError(f"arrays of dtype {obj.dtype} cannot be sent")
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": list(obj.shape),
        }
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def decode_numpy(obj: dict) -> Any:
    """msgpack `object_hook`: an openpi array or scalar map back to numpy; any other map unchanged."""
    try:
        if b"__ndarray__" in obj:
            dtype = np.dtype(obj[b"dtype"])
            if dtype.kind in REFUSED_KINDS:
                raise ValueError(f"arrays of dtype {dtype} are not accepted")
            return np.frombuffer(obj[b"data"], dtype=dtype).reshape(obj[b"shape"])
        if b"__npgeneric__" in obj:
            return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    except (KeyError, TypeError, ValueError) as exc:  # a malformed array map is the sender's error
        kind = "array" if b"__ndarray__" in obj else "numpy scalar"
        detail = f"lacks {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"malformed {kind}: {detail}") from None
    return obj


#: What one request may hold: observations are a few keys of a few arrays, so these bounds keep decoding a
#: hostile message cheap (msgpack refuses beyond them before building anything).
REQUEST_LIMITS = {"max_map_len": 256, "max_array_len": 4096, "max_str_len": 1 << 20, "max_ext_len": 0}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=encode_numpy)


def unpack(data: bytes, limited: bool = False) -> Any:
    """Decode a message; `limited` applies REQUEST_LIMITS (the server does, for what clients send)."""
    limits: dict[str, int] = {**REQUEST_LIMITS, "max_bin_len": len(data)} if limited else {}
    return msgpack.unpackb(data, object_hook=decode_numpy, **limits)

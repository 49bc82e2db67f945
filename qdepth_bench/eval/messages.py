"""Messages between the engine and env workers that run in another Python environment, without pickle.

A worker in SimplerEnv's environment has numpy 1.x; the engine has numpy 2. Pickles of numpy 2 arrays
name modules numpy 1 does not have, so what crosses is msgpack: arrays and numpy scalars as openpi's wire
maps (`remote.wire`), tuples and paths tagged, and the project's dataclasses (episode specs, observation
batches, results, sinks) as their class name and init fields. Only dataclasses of this package are rebuilt
on the way back, so a message can never name arbitrary code.
"""

from __future__ import annotations

import dataclasses
import importlib
from multiprocessing.connection import Connection
from pathlib import Path, PurePath
from typing import Any

import msgpack

from qdepth_bench.remote.wire import decode_numpy, encode_numpy

PACKAGE = "qdepth_bench."


def _encode(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return {"__tuple__": list(obj)}
    if isinstance(obj, PurePath):
        return {"__path__": str(obj)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        if not cls.__module__.startswith(PACKAGE):
            raise TypeError(f"{cls.__module__}.{cls.__qualname__} is not a qdepth_bench dataclass")
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    encoded = encode_numpy(obj)
    if encoded is obj:
        raise TypeError(f"cannot send a {type(obj).__name__} to an env worker in another environment")
    return encoded


def _decode(obj: dict) -> Any:
    if "__tuple__" in obj:
        return tuple(obj["__tuple__"])
    if "__path__" in obj:
        return Path(obj["__path__"])
    if "__dataclass__" in obj:
        module, _, name = obj["__dataclass__"].partition(":")
        if not module.startswith(PACKAGE):
            raise ValueError(f"refusing to build {obj['__dataclass__']}: not a qdepth_bench class")
        cls = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ValueError(f"refusing to build {obj['__dataclass__']}: not a dataclass")
        return cls(**obj["fields"])
    decoded = decode_numpy(obj)
    if decoded is not obj and hasattr(decoded, "flags") and not decoded.flags.writeable:
        return decoded.copy()  # as a pickled array would be: writable, owning its memory
    return decoded


def pack(message: Any) -> bytes:
    return msgpack.packb(message, default=_encode, strict_types=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, object_hook=_decode, strict_map_key=False)


class MessageConnection:
    """A `multiprocessing` connection whose `send`/`recv` use this format instead of pickle; it can be
    waited on like the connection it wraps."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def send(self, message: Any) -> None:
        self.connection.send_bytes(pack(message))

    def recv(self) -> Any:
        return unpack(self.connection.recv_bytes())

    def poll(self, timeout: float = 0.0) -> bool:
        return self.connection.poll(timeout)

    def fileno(self) -> int:
        return self.connection.fileno()

    def close(self) -> None:
        self.connection.close()

"""What the engine and its env workers say to each other, and how it crosses to a worker in another Python.

Every message is a small dataclass with a `kind`, so neither side reads fields by position: the engine sends
`Setup` (the run's `WorkerSettings`), `Prepare`, `StartEpisode`, `Chunk`, `Abort` and `Close`; a worker answers
`Observation`, `Ended` or `Fatal`, and a pool reports a dead worker as `Died`. Spawned and Ray workers get them
pickled.

A worker in SimplerEnv's environment has numpy 1.x; the engine has numpy 2. Pickles of numpy 2 arrays
name modules numpy 1 does not have, so what crosses to it is msgpack: arrays and numpy scalars as openpi's wire
maps (`remote.wire`), tuples and paths tagged, and the project's dataclasses (these messages, episode specs,
observation batches, results, sinks) as their class name and init fields. Only dataclasses of this package are
rebuilt on the way back, so a message can never name arbitrary code.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path, PurePath
from typing import Any, ClassVar

import msgpack
import numpy as np

from qdepth_bench.core.policy import ObservationBatch, PolicyRequirements
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.core.sim import EpisodeSink
from qdepth_bench.eval.episode import EpisodeResult
from qdepth_bench.remote.wire import decode_numpy, encode_numpy


@dataclass(frozen=True)
class WorkerSettings:
    """What every env worker of a run needs, as one value: the suite (protocol included), what the policy needs
    from the env (cameras, frame size, depth, privileged state), the run (named in files the sinks write) and
    where finished episodes go besides the database (videos, demonstration files)."""

    spec: SuiteSpec
    requirements: PolicyRequirements
    run_id: str
    sinks: tuple[EpisodeSink, ...] = ()


@dataclass(frozen=True)
class WorkerLaunch:
    """The first message of a worker in another Python environment (`eval.foreign_worker`): its settings and
    whether it holds its output until the run's own settings arrive (`worker.HeldOutput`)."""

    kind: ClassVar[str] = "launch"
    settings: WorkerSettings
    hold_output: bool = False


@dataclass(frozen=True)
class Setup:
    """The run's own settings, for a worker started before the run existed (or for the next run)."""

    kind: ClassVar[str] = "setup"
    settings: WorkerSettings


@dataclass(frozen=True)
class Prepare:
    """Build this task's env now, ahead of its first episode (while the policy loads)."""

    kind: ClassVar[str] = "prepare"
    task_id: int


@dataclass(frozen=True)
class StartEpisode:
    """Reset the env to this episode and answer with its first observation."""

    kind: ClassVar[str] = "episode"
    episode: EpisodeSpec


@dataclass(frozen=True)
class Chunk:
    """Execute these actions open-loop (rows: steps) in the running episode."""

    kind: ClassVar[str] = "chunk"
    actions: np.ndarray


@dataclass(frozen=True)
class Abort:
    """Drop the running episode (its policy call failed); no answer."""

    kind: ClassVar[str] = "abort"


@dataclass(frozen=True)
class Close:
    """Close the env and end the worker; no answer."""

    kind: ClassVar[str] = "close"


@dataclass(frozen=True)
class Observation:
    """The running episode needs its next chunk; `seconds`: the worker's own time since the engine's message
    (with an env build `Prepare` did ahead of the episode)."""

    kind: ClassVar[str] = "obs"
    key: str
    observation: ObservationBatch
    seconds: float


@dataclass(frozen=True)
class Ended:
    """The episode is over (success, failure, or an error of its own)."""

    kind: ClassVar[str] = "end"
    result: EpisodeResult


@dataclass(frozen=True)
class Fatal:
    """The suite cannot be set up at all: a setup error no retry fixes, in one line."""

    kind: ClassVar[str] = "fatal"
    text: str


@dataclass(frozen=True)
class Died:
    """Said by the pool, not the worker: the worker of this slot is gone (crashed, killed)."""

    kind: ClassVar[str] = "died"
    reason: str


#: what the engine sends a worker, and what comes back for a slot
ToWorker = Setup | Prepare | StartEpisode | Chunk | Abort | Close
FromWorker = Observation | Ended | Fatal | Died

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

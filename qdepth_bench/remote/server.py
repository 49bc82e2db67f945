"""`qdepth-bench serve`: any registered policy behind openpi's websocket policy-server protocol.

On connect the server sends its metadata (the served policy's identity and requirements). Each binary
message is one inference request; the reply carries the action chunk and `server_timing`. Errors in a
request (missing keys, wrong shapes or dtypes) come back as a text message, as openpi's server does, and
the connection stays open. `GET /healthz` answers 200 for load balancers and scripts.

Two request forms are accepted:
  openpi's single observation: {"observation/image": (H, W, 3) uint8, optional "observation/wrist_image",
      "observation/state": (D,), "prompt": str} -> {"actions": (chunk, A)}. openpi has no reset message,
      so each connection is one episode of the serve command's `--suite` task 0, with the prompt as its
      instruction.
  our batched form ("qdepth_bench/batch": 1): episode keys, "images/<role>" (B, H, W, 3), "state" (B, D),
      "instructions", and "resets" (episode key, seed and task of episodes that start) ->
      {"actions": (B, chunk, A)}. This is what `--policy remote` sends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from http import HTTPStatus
from typing import Any

import numpy as np

from qdepth_bench import __version__
from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, Policy, TaskInfo
from qdepth_bench.remote.wire import BATCH_KEY, OPENPI_CAMERAS, pack, unpack


class RequestError(ValueError):
    """A request the server cannot serve; its message goes back to the client."""


def _array(obs: dict, key: str, ndim: int, kinds: str) -> np.ndarray:
    if key not in obs:
        raise RequestError(f"missing key {key!r} (got {', '.join(sorted(map(str, obs)))})")
    value = obs[key]
    if not isinstance(value, np.ndarray) or value.ndim != ndim or value.dtype.kind not in kinds:
        shape = getattr(value, "shape", type(value).__name__)
        dtype = getattr(value, "dtype", "")
        raise RequestError(f"{key!r} must be a {ndim}-d array of kind {kinds!r}; got {shape} {dtype}")
    return value


class PolicyServer:
    """Serves one policy to any number of clients; calls into the policy are serialised by a lock."""

    def __init__(self, policy: Policy, default_task: TaskInfo, max_request_bytes: int = 64 << 20) -> None:
        self.policy = policy
        self.default_task = default_task
        self.max_request_bytes = max_request_bytes
        self._lock = threading.Lock()
        self._connections = itertools.count()

    def metadata(self) -> dict[str, Any]:
        identity = self.policy.identity()
        return {
            "server": "qdepth-bench",
            "version": __version__,
            "protocol": 1,
            "policy": {**identity.as_record(), "config": identity.config},
            "requirements": dataclasses.asdict(self.policy.requirements),
        }

    # ----- one request -------------------------------------------------------------------------------------

    def infer(self, obs: Any, connection: int, started: set[str]) -> dict[str, Any]:
        """Validate a request, reset episodes that start, run the policy; RequestError for bad requests."""
        if not isinstance(obs, dict):
            raise RequestError(f"a request must be a map of observations, not {type(obs).__name__}")
        start = time.perf_counter()
        if obs.get(BATCH_KEY):
            batch, resets = self._batched(obs)
        else:
            batch, resets = self._openpi(obs, connection, started)
        with self._lock:
            for context in resets:
                self.policy.reset(context)
            actions = np.asarray(self.policy.act(batch), dtype=np.float32)
        infer_ms = 1000 * (time.perf_counter() - start)
        if not obs.get(BATCH_KEY):
            actions = actions[0]
        return {"actions": actions, "server_timing": {"infer_ms": infer_ms}}

    def _check_images(self, images: dict[str, np.ndarray], batch: int) -> None:
        size = self.policy.requirements.image_size
        for role in self.policy.requirements.cameras:
            if role not in images:
                raise RequestError(f"the policy needs the {role!r} camera image")
            image = images[role]
            if image.dtype != np.uint8 or image.shape[1:] != (size, size, 3) or image.shape[0] != batch:
                raise RequestError(
                    f"{role} images must be uint8 ({batch}, {size}, {size}, 3); got {image.dtype} {image.shape}"
                )

    def _batched(self, obs: dict) -> tuple[ObservationBatch, list[EpisodeContext]]:
        keys, instructions = obs.get("keys"), obs.get("instructions")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise RequestError("'keys' must be a non-empty list of episode keys")
        if not isinstance(instructions, list) or len(instructions) != len(keys):
            raise RequestError("'instructions' must be a list with one instruction per key")
        state = _array(obs, "state", 2, "fiu")
        if state.shape[0] != len(keys):
            raise RequestError(f"'state' has {state.shape[0]} rows for {len(keys)} keys")
        images = {
            role: _array(obs, f"images/{role}", 4, "u")
            for role in self.policy.requirements.cameras
            if f"images/{role}" in obs
        }
        self._check_images(images, len(keys))
        resets = []
        for item in obs.get("resets", []):
            try:
                fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in item["task"].items()}
                task = TaskInfo(**fields)
                resets.append(EpisodeContext(str(item["key"]), task, int(item["seed"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise RequestError(f"bad reset entry: {exc}") from None
        return ObservationBatch(keys, images, state.astype(np.float64), [str(t) for t in instructions]), resets

    def _openpi(self, obs: dict, connection: int, started: set[str]) -> tuple[ObservationBatch, list[EpisodeContext]]:
        prompt = obs.get("prompt", self.default_task.instruction)
        if not isinstance(prompt, str):
            raise RequestError("'prompt' must be a string")
        state = _array(obs, "observation/state", 1, "fiu")
        images = {role: _array(obs, key, 3, "u")[None] for role, key in OPENPI_CAMERAS.items() if key in obs}
        self._check_images(images, 1)
        key = f"connection-{connection}"
        resets = []
        if key not in started:
            started.add(key)
            task = dataclasses.replace(self.default_task, instruction=prompt)
            resets.append(EpisodeContext(key, task, connection))
        return ObservationBatch([key], images, state[None].astype(np.float64), [prompt]), resets

    # ----- the websocket server ----------------------------------------------------------------------------

    async def _handle(self, websocket: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        connection, started = next(self._connections), set[str]()
        try:
            await websocket.send(pack(self.metadata()))
            async for message in websocket:
                if isinstance(message, str):
                    await websocket.send("requests must be binary msgpack messages, not text")
                    continue
                try:
                    obs = unpack(message)
                    reply = await asyncio.to_thread(self.infer, obs, connection, started)
                    await websocket.send(pack(reply))
                except (RequestError, ValueError, TypeError) as exc:
                    await websocket.send(f"bad request: {exc}")
                except Exception as exc:  # noqa: BLE001 - the policy failed; say so, keep serving
                    await websocket.send(f"policy error: {type(exc).__name__}: {exc}")
        except ConnectionClosed:
            return  # the client went away, possibly mid-request: nothing to clean up

    @staticmethod
    def _health(connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        return None

    async def serve(self, host: str, port: int, ready: threading.Event | None = None) -> None:
        from websockets.asyncio.server import serve

        async with serve(
            self._handle, host, port, max_size=self.max_request_bytes, compression=None, process_request=self._health
        ) as server:
            if ready is not None:
                ready.set()
            await server.serve_forever()

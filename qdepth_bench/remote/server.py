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
      {"actions": (B, chunk, A)}. This is what `--policy remote` sends. With "depth": 1 (`run
      --depth-metrics`) the reply also holds the depth head's output, "depth_logits" (B, N, K) or
      "depth_relative" (B, H, W); the metadata's "depth_output" says which ("": no depth head).
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
        keys = sorted(map(str, obs))
        more = f", ... {len(keys) - 8} more" if len(keys) > 8 else ""
        raise RequestError(f"missing key {key!r} (got {', '.join(keys[:8])}{more})")
    value = obs[key]
    if not isinstance(value, np.ndarray) or value.ndim != ndim or value.dtype.kind not in kinds:
        shape = getattr(value, "shape", type(value).__name__)
        dtype = getattr(value, "dtype", "")
        raise RequestError(f"{key!r} must be a {ndim}-d array of kind {kinds!r}; got {shape} {dtype}")
    return value


#: the pause after a client's first bad request in a row, doubling with each further one up to MAX_BACKOFF_S
BAD_REQUEST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line (never echoing a whole hostile request back)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


class PolicyServer:
    """Serves one policy to any number of clients; calls into the policy are serialised by a lock."""

    def __init__(self, policy: Policy, default_task: TaskInfo, max_request_bytes: int = 64 << 20) -> None:
        self.policy = policy
        self.default_task = default_task
        self.max_request_bytes = max_request_bytes
        self._lock = threading.Lock()
        self._connections = itertools.count()
        #: episode keys of the batched form that some request has reset (the policy holds their state)
        self._episodes: set[str] = set()

    def metadata(self) -> dict[str, Any]:
        identity = self.policy.identity()
        return {
            "server": "qdepth-bench",
            "version": __version__,
            "protocol": 1,
            "policy": {**identity.as_record(), "config": identity.config},
            "requirements": dataclasses.asdict(self.policy.requirements),
            "depth_output": self.policy.depth_output(),
        }

    # ----- one request -------------------------------------------------------------------------------------

    def infer(self, obs: Any, connection: int, started: set[str]) -> dict[str, Any]:
        """Validate a request, reset episodes that start, run the policy; RequestError for bad requests."""
        start = time.perf_counter()
        batch, resets = self.parse(obs, connection, started)
        return self.run(obs, batch, resets, start)

    def parse(self, obs: Any, connection: int, started: set[str]) -> tuple[ObservationBatch, list[EpisodeContext]]:
        """The observation batch and the episodes that start with it; RequestError names what is wrong."""
        if not isinstance(obs, dict):
            raise RequestError(f"a request must be a map of observations, not {type(obs).__name__}")
        try:
            if obs.get(BATCH_KEY):
                return self._batched(obs)
            return self._openpi(obs, connection, started)
        except RequestError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestError(f"{type(exc).__name__}: {exc}") from None

    def run(
        self, obs: dict[str, Any], batch: ObservationBatch, resets: list[EpisodeContext], start: float
    ) -> dict[str, Any]:
        """Reset the starting episodes and call the policy (one call at a time across clients)."""
        with self._lock:
            for context in resets:
                self.policy.reset(context)
                self._episodes.add(context.key)
            depth: dict[str, np.ndarray] = {}
            if obs.get(BATCH_KEY) and obs.get("depth"):
                raw, prediction = self.policy.act_with_depth(batch)
                if prediction.logits is not None:
                    depth["depth_logits"] = np.asarray(prediction.logits, dtype=np.float32)
                if prediction.relative is not None:
                    depth["depth_relative"] = np.asarray(prediction.relative, dtype=np.float32)
            else:
                raw = self.policy.act(batch)
            actions = np.asarray(raw, dtype=np.float32)
        infer_ms = 1000 * (time.perf_counter() - start)
        if not obs.get(BATCH_KEY):
            actions = actions[0]
        return {"actions": actions, **depth, "server_timing": {"infer_ms": infer_ms}}

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
        starting = {context.key for context in resets}
        unknown = [key for key in keys if key not in starting and key not in self._episodes]
        if unknown:
            raise RequestError(
                f"episode key {unknown[0][:80]!r} was never reset: send it in 'resets' (key, seed and task) "
                "with the episode's first request"
            )
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

    def answer(self, message: bytes, connection: int, started: set[str]) -> bytes | str:
        """One request's reply: packed actions, or a short text saying 'bad request' (the client's fault,
        naming the first offending key or field) or 'policy error' (the policy failed on a valid request)."""
        start = time.perf_counter()
        try:
            obs = unpack(message, limited=True)
        except Exception as exc:  # noqa: BLE001 - anything msgpack refuses is the sender's error
            return f"bad request: not a msgpack observation map ({_short(exc)})"
        try:
            batch, resets = self.parse(obs, connection, started)
        except RequestError as exc:
            return f"bad request: {_short(exc)}"
        try:
            return pack(self.run(obs, batch, resets, start))
        except Exception as exc:  # noqa: BLE001 - the policy failed; say so, keep serving
            return f"policy error: {type(exc).__name__}: {_short(exc)}"

    # ----- the websocket server ----------------------------------------------------------------------------

    async def _handle(self, websocket: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        connection, started = next(self._connections), set[str]()
        try:
            await websocket.send(pack(self.metadata()))
            strikes = 0  # bad requests in a row on this connection
            async for message in websocket:
                if isinstance(message, str):
                    reply: bytes | str = "bad request: requests must be binary msgpack messages, not text"
                else:
                    # decoded and answered off the event loop, so one large request never stalls other clients
                    reply = await asyncio.to_thread(self.answer, message, connection, started)
                await websocket.send(reply)
                strikes = strikes + 1 if isinstance(reply, str) and reply.startswith("bad request") else 0
                if strikes:
                    # a client that keeps sending bad requests is read ever more slowly (the websocket's
                    # small queue then stops reading its socket), so it cannot load the loop others share
                    await asyncio.sleep(min(BAD_REQUEST_BACKOFF_S * 2 ** (strikes - 1), MAX_BACKOFF_S))
        except ConnectionClosed:
            return  # the client went away, possibly mid-request: nothing to clean up

    @staticmethod
    def _health(connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        return None

    async def serve(self, host: str, port: int, ready: threading.Event | None = None, on_listening: Any = None) -> None:
        """Listen until cancelled; `ready` is set and `on_listening()` called once the port is bound."""
        from websockets.asyncio.server import serve

        async with serve(
            self._handle,
            host,
            port,
            max_size=self.max_request_bytes,
            max_queue=2,  # requests are answered one by one: buffering more only holds memory for a flood
            compression=None,
            process_request=self._health,
        ) as server:
            if ready is not None:
                ready.set()
            if on_listening is not None:
                on_listening()
            await server.serve_forever()

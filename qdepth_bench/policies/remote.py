"""A policy served on another machine: `--policy remote --policy-arg url=ws://host:port`.

Against `qdepth-bench serve` the batch goes over in one request and the run records the *served* policy's
identity (name, config hash, checkpoint hash), so a remote run and a local run of the same policy share a
table row. Against openpi's own server (`protocol=openpi`, or detected from its metadata) each row is sent as
openpi's single LIBERO observation and the identity is the server's url and metadata.

A dropped connection is re-opened (up to `retries` times) and the resets of the episodes in the batch are
sent again; no answer within `timeout_s` is an error of the episodes in that batch, never a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdepth_bench.core.errors import TransientError, UserError
from qdepth_bench.core.hashing import stable_hash
from qdepth_bench.core.policy import (
    DepthCodec,
    DepthPrediction,
    EpisodeContext,
    ObservationBatch,
    Policy,
    PolicyIdentity,
    PolicyRequirements,
    check_ranges,
)
from qdepth_bench.remote.wire import BATCH_KEY, OPENPI_CAMERAS, pack, unpack


@dataclass
class RemoteConfig:
    """`protocol`: auto (ours if the server says so, else openpi), qdepth-bench, or openpi."""

    url: str = ""
    protocol: str = "auto"
    timeout_s: float = 120.0
    retries: int = 3
    max_message_mb: int = 64
    #: openpi servers do not describe themselves: what to ask the suite for
    cameras: tuple[str, ...] = ("main", "wrist")
    chunk_size: int = 10

    def __post_init__(self) -> None:
        check_ranges(self, positive=("timeout_s", "max_message_mb", "chunk_size"), non_negative=("retries",))


class RemotePolicy(Policy):
    Config = RemoteConfig

    def __init__(self, config: RemoteConfig, name: str = "remote") -> None:
        super().__init__(config, name)
        if not config.url.startswith(("ws://", "wss://")):
            raise UserError(
                "--policy remote needs --policy-arg url=ws://HOST:PORT (a `qdepth-bench serve` or "
                "openpi policy server)."
            )
        if config.protocol not in ("auto", "qdepth-bench", "openpi"):
            raise UserError(f"protocol must be auto, qdepth-bench or openpi (got {config.protocol!r}).")
        self._ws: Any = None  # the open websockets connection
        self._stack = contextlib.ExitStack()  # holds the open connection (websockets wants a context manager)
        self._sent_resets: set[str] = set()
        self._contexts: dict[str, EpisodeContext] = {}
        self.metadata = self._connect()
        ours = self.metadata.get("server") == "qdepth-bench"
        self.protocol = config.protocol if config.protocol != "auto" else ("qdepth-bench" if ours else "openpi")

    # ----- connection -----------------------------------------------------------------------------------------

    def _connect(self) -> dict[str, Any]:
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        self._stack.close()  # the previous connection, if any
        try:
            self._ws = self._stack.enter_context(
                connect(
                    self.config.url,
                    max_size=self.config.max_message_mb << 20,
                    compression=None,
                    open_timeout=min(self.config.timeout_s, 30),
                )
            )
            metadata = unpack(self._ws.recv(timeout=self.config.timeout_s))
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise UserError(
                f"cannot reach a policy server at {self.config.url} ({type(exc).__name__}: {exc}); "
                "start one with `qdepth-bench serve --policy NAME --port PORT` or check the url."
            ) from None
        self._sent_resets.clear()
        return metadata if isinstance(metadata, dict) else {}

    def _round_trip(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its reply, re-connecting after a dropped connection."""
        from websockets.exceptions import ConnectionClosed

        data = pack(request)
        for attempt in range(self.config.retries + 1):
            if attempt:  # the connection dropped: wait, reconnect, and send the batch's resets again
                time.sleep(min(2 ** (attempt - 1), 10))
                self._connect_quietly()
                if BATCH_KEY in request:
                    request["resets"] = [self._reset_record(self._contexts[k]) for k in request["keys"]]
                    self._sent_resets.update(request["keys"])
                    data = pack(request)
            try:
                self._ws.send(data)
                reply = self._ws.recv(timeout=self.config.timeout_s)
            except TimeoutError:
                self._connect_quietly()
                raise TransientError(f"no answer from {self.config.url} within {self.config.timeout_s:g} s") from None
            except (ConnectionClosed, OSError):
                continue
            if isinstance(reply, str):
                raise RuntimeError(f"policy server: {reply}")
            return unpack(reply)
        raise TransientError(f"lost the connection to {self.config.url} {self.config.retries + 1} times")

    def _connect_quietly(self) -> None:
        try:
            self.metadata = self._connect()
        except UserError:
            pass  # the next send fails and counts as one more attempt

    # ----- policy protocol ------------------------------------------------------------------------------------

    @property
    def requirements(self) -> PolicyRequirements:
        if self.protocol == "qdepth-bench":
            fields: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in self.metadata["requirements"].items()
            }
            return PolicyRequirements(**fields)
        return PolicyRequirements(cameras=tuple(self.config.cameras), chunk_size=self.config.chunk_size)

    def identity(self) -> PolicyIdentity:
        if self.protocol == "qdepth-bench":
            served = self.metadata["policy"]
            return PolicyIdentity(
                served["policy_name"],
                served["config"],
                served["policy_config_hash"],
                served["policy_checkpoint_hash"] or None,
            )
        config = {"url": self.config.url, "server_metadata": self.metadata}
        return PolicyIdentity(self.name, config, stable_hash(config))

    @staticmethod
    def _reset_record(context: EpisodeContext) -> dict[str, Any]:
        return {"key": context.key, "seed": context.seed, "task": dataclasses.asdict(context.task)}

    def reset(self, episode: EpisodeContext) -> None:
        self._contexts[episode.key] = episode
        self._sent_resets.discard(episode.key)

    def act(self, batch: ObservationBatch) -> np.ndarray:
        if self.protocol == "openpi":
            return np.stack([self._act_openpi(batch, row) for row in range(len(batch))])
        return np.asarray(self._act_batched(batch, depth=False)["actions"], dtype=np.float32)

    def depth_output(self) -> str:
        """What the served policy's depth head predicts, as its metadata says ("" from openpi servers and
        servers that predate depth metrics)."""
        return str(self.metadata.get("depth_output", "")) if self.protocol == "qdepth-bench" else ""

    def depth_codec(self, vqvae: Path | None) -> DepthCodec:
        """The served policy's VQ-VAE lives with it on the server: a local copy is named with --vqvae."""
        if vqvae is None:
            raise UserError(
                f"{self.config.url} serves a policy that predicts depth tokens; its VQ-VAE is on the server: "
                "pass a copy of it with --vqvae FOLDER."
            )
        from qdepth_bench.models.vqvae import VQVAECodec, load_vqvae

        return VQVAECodec(load_vqvae(vqvae)[0])

    def act_with_depth(self, batch: ObservationBatch) -> tuple[np.ndarray, DepthPrediction]:
        """The batched request with `depth` set; the reply's optional `depth_logits` or `depth_relative`."""
        if not self.depth_output():
            return super().act_with_depth(batch)
        reply = self._act_batched(batch, depth=True)
        logits, relative = reply.get("depth_logits"), reply.get("depth_relative")
        return np.asarray(reply["actions"], dtype=np.float32), DepthPrediction(
            None if logits is None else np.asarray(logits), None if relative is None else np.asarray(relative)
        )

    def _act_batched(self, batch: ObservationBatch, depth: bool) -> dict[str, Any]:
        resets = [self._reset_record(self._contexts[k]) for k in batch.keys if k not in self._sent_resets]
        request: dict[str, Any] = {
            BATCH_KEY: 1,
            "keys": list(batch.keys),
            "state": np.asarray(batch.state),
            "instructions": list(batch.instructions),
            "resets": resets,
        }
        if depth:
            request["depth"] = 1
        for role, images in batch.images.items():
            request[f"images/{role}"] = np.ascontiguousarray(images)
        reply = self._round_trip(request)
        self._sent_resets.update(batch.keys)
        return reply

    def _act_openpi(self, batch: ObservationBatch, row: int) -> np.ndarray:
        request: dict[str, Any] = {"observation/state": np.asarray(batch.state[row]), "prompt": batch.instructions[row]}
        for role, key in OPENPI_CAMERAS.items():
            if role in batch.images:
                request[key] = np.ascontiguousarray(batch.images[role][row])
        return np.asarray(self._round_trip(request)["actions"], dtype=np.float32)

    def close(self) -> None:
        self._stack.close()
        self._ws = None

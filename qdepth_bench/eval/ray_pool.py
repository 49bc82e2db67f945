"""Env workers as Ray actors, for runs spread over many machines (`--executor ray --ray-address ...`).

Each actor holds one `EnvWorker`; the engine and the policy stay in the driver, so results land in the
driver's database exactly as with the local executor. Every node needs qdepth-bench and the simulators
installed (the same `scripts/setup.sh`). Without an address a local Ray instance is started and stopped
with the run; `auto` joins the cluster this machine belongs to.
"""

from __future__ import annotations

from typing import Any

import ray

from qdepth_bench.core.errors import UserError
from qdepth_bench.eval.messages import Died, FromWorker, ToWorker, WorkerSettings
from qdepth_bench.eval.pool import WorkerPool, renderer_threads


class _EnvActor:
    """Ray actor body: one env worker answering the engine's messages one at a time, in order."""

    def __init__(self, settings: WorkerSettings) -> None:
        from qdepth_bench.eval.worker import EnvWorker

        self.worker = EnvWorker(settings)

    def handle(self, message: ToWorker) -> FromWorker | None:
        return self.worker.handle(message)


class RayPool(WorkerPool):
    """`size` env actors of one CPU each; `poll` waits on their pending replies."""

    def __init__(self, size: int, settings: WorkerSettings, address: str | None = None) -> None:
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env={"env_vars": renderer_threads(size)},
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(
                    f"cannot reach Ray at {address or 'a new local instance'}: {exc}; "
                    "start it with `ray start --head` or check --ray-address."
                ) from None
        super().__init__(size, settings)
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(_EnvActor)
        self._actors: list[Any] = [self._actor_class.remote(settings) for _ in range(size)]
        self._pending: dict[Any, int] = {}

    def send(self, slot: int, message: ToWorker) -> None:
        self._pending[self._actors[slot].handle.remote(message)] = slot

    def poll(self, timeout: float) -> list[tuple[int, FromWorker]]:
        if not self._pending:
            return []
        refs = list(self._pending)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        # replies of one slot must be handled in the order its messages were sent
        ready.sort(key=refs.index)
        replies: list[tuple[int, FromWorker]] = []
        dead: set[int] = set()
        for ref in ready:
            slot = self._pending.pop(ref)
            if slot in dead:
                continue
            try:
                reply = ray.get(ref)
            except ray.exceptions.RayError as exc:
                dead.add(slot)
                replies.append((slot, Died(f"env actor of slot {slot} died ({type(exc).__name__})")))
                continue
            if reply is not None:
                replies.append((slot, reply))
        return replies

    def restart(self, slot: int) -> None:
        ray.kill(self._actors[slot], no_restart=True)
        self.prepared[slot] = None
        self._pending = {ref: s for ref, s in self._pending.items() if s != slot}
        self._actors[slot] = self._actor_class.remote(self.settings)

    def close(self, wait: bool = True) -> None:
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._pending.clear()
        if self._started_ray:
            ray.shutdown()

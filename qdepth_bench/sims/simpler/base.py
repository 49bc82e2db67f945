"""What the two SIMPLER backends share: tasks from `content/suites/simpler.yaml`, episodes from their grids.

A task runs on a backend when its `env_ids` names that backend; `simpler_widowx` has both, `simpler_google`
only `simpler_env`. Choosing the backend (`qdepth-bench run --backend`) changes the run's protocol hash, so
runs on the two are never pooled (docs/protocols.md, last section).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from qdepth_bench.core.episode_grid import task_cells
from qdepth_bench.core.errors import UserError
from qdepth_bench.core.policy import TaskInfo
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec, episode_seed
from qdepth_bench.core.sim import Backend


class SimplerBackend(Backend):
    #: the key of this backend in each task's `env_ids`
    name = ""

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        self.tasks: list[dict[str, Any]] = spec.extra["tasks"]
        unsupported = [t["key"] for t in self.tasks if self.name not in t.get("env_ids", {})]
        if unsupported:
            raise UserError(
                f"suite '{spec.name}' task '{unsupported[0]}' has no {self.name} env id; "
                f"choose another --backend ({', '.join(spec.backend_choices)})."
            )

    def task_info(self, task_id: int) -> TaskInfo:
        task = self.tasks[task_id]
        p = self.spec.protocol
        return TaskInfo(
            self.spec.name,
            task_id,
            task["key"],
            task["instruction"],
            p["robot"],
            tuple(p["action_low"]),
            tuple(p["action_high"]),
            tuple(p["noop_action"]),
            p["state_layout"],
        )

    def episodes(self, task_ids: list[int], n_episodes: int, run_seed: int) -> list[EpisodeSpec]:
        """One episode per grid cell (or prepackaged draw), the cell recorded as the episode's variant."""
        out = []
        for t in task_ids:
            cells = task_cells(self.tasks[t], self.spec.protocol["grid_mode"], int(self.spec.protocol["grid_repeats"]))
            out += [
                EpisodeSpec(self.spec.name, t, i, episode_seed(run_seed, self.spec.name, t, i), cell)
                for i, cell in enumerate(cells[:n_episodes])
            ]
        return out


class MissingAsset(Exception):
    """A file the scene needs is absent: raised before the episode starts, never recorded as a failure."""

    def __init__(self, path: str, collection: str, fix: str, stage: bool = False) -> None:
        self.path = path
        stand_in = ", or add --stand-ins for a project-made stand-in table (non-standard)" if stage else ""
        super().__init__(f"{collection} lack {path}: {fix}{stand_in}.")


def reset_seed(episode: EpisodeSpec) -> int:
    """The env seed of one episode: a prepackaged draw is its recorded seed (the env's RNG picks the layout
    from it, as SimplerEnv does); a grid cell fixes the layout, and the seed is the episode's own."""
    if episode.variant.get("mode") == "prepackaged":
        return int(episode.variant["seed"])
    return int(episode.seed) % 2**31


@contextmanager
def unobserved(sim_env: Any, skip: bool) -> Iterator[None]:
    """While `skip`, the env's steps return no observation and render nothing.

    ManiSkill3 and ManiSkill2 (SimplerEnv) both have an observation mode "none" whose `get_obs` returns an
    empty dict without updating the render scene or taking a picture; their physics, `evaluate` (success,
    grasp) and the SIMPLER tasks' rewards never read the observation, and the next observed step renders
    from the physics state as usual. The mode is switched for the step only, never for a reset."""
    unwrapped = sim_env.unwrapped
    obs_mode = unwrapped._obs_mode
    if skip:
        unwrapped._obs_mode = "none"
    try:
        yield
    finally:
        unwrapped._obs_mode = obs_mode

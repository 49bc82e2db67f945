"""What one LIBERO step costs on this machine, and what the harness adds on top of it.

Prints, for one task: the physics-only step (no camera observations), the render cost of each camera
(agentview, then the wrist camera) at the protocol's 256 px, and the harness's full step (LiberoEnv.step:
render, 180-degree rotation, 224 px resize, proprio, plus the policy call every `replan_steps`) against raw
`env.step` on the same simulator with the same camera. Raw and harness steps alternate in blocks on one env,
so machine noise hits both alike; the figure to read is the overhead ratio.

    python benchmarks/libero_step_cost.py [--suite libero_object] [--task 0] [--blocks 10] [--block-steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from qdepth_bench.core.policy import EpisodeContext
from qdepth_bench.registry.policies import make_policy
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry


def per_step(step, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def raw_env(backend, task_id: int, cameras: list[str], size: int):
    """A LIBERO env as its own examples build it, with exactly these cameras (none: no camera obs)."""
    from libero.libero.envs import OffScreenRenderEnv

    task = backend.suite.get_task(task_id)
    bddl = str(backend.bddl_root / task.problem_folder / task.bddl_file)
    env = OffScreenRenderEnv(
        bddl_file_name=bddl,
        camera_heights=size,
        camera_widths=size,
        camera_names=cameras or ["agentview"],
        use_camera_obs=bool(cameras),
    )
    env.seed(7)
    env.reset()
    env.set_init_state(backend.suite.get_task_init_states(task_id)[0])
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--block-steps", type=int, default=20)
    args = parser.parse_args()

    spec = suite_registry().suites[args.suite]
    backend = make_backend(spec)
    size = int(spec.protocol["render_size"])
    noop = np.asarray(spec.protocol["noop_action"], dtype=np.float64)
    n = args.block_steps

    # Physics and render costs: three raw envs, measured in alternating blocks.
    envs = {
        label: raw_env(backend, args.task, cams, size)
        for label, cams in (
            ("physics", []),
            ("agentview", ["agentview"]),
            ("agentview+wrist", ["agentview", "robot0_eye_in_hand"]),
        )
    }
    times: dict[str, list[float]] = {label: [] for label in envs}
    for _ in range(args.blocks):
        for label, env in envs.items():
            times[label].append(per_step(lambda e=env: e.step(noop), n))
    for env in envs.values():
        env.close()
    med = {label: statistics.median(v) for label, v in times.items()}

    # Harness vs raw on one env with the main camera: LiberoEnv.step + policy every replan_steps.
    policy = make_policy("noop")
    env = backend.make_env(args.task, policy.requirements)
    episode = backend.episodes([args.task], 1, int(spec.protocol["env_seed"]))[0]
    replan = int(spec.protocol["replan_steps"])
    policy.reset(EpisodeContext(episode.key, env.task, episode.seed))
    obs = env.reset(episode)
    plan: list[np.ndarray] = []

    def harness_step() -> None:
        nonlocal obs, plan
        if not plan:
            plan = list(policy.act(obs)[0][:replan])
        obs = env.step(plan.pop(0)).observation

    raw, harness = [], []
    for _ in range(args.blocks):
        raw.append(per_step(lambda: env.sim_env.step(noop), n))
        harness.append(per_step(harness_step, n))
    env.close()
    raw_med, harness_med = statistics.median(raw), statistics.median(harness)

    steps = args.blocks * n
    print(
        f"{args.suite} task {args.task}: {size} px cameras, median over {args.blocks} blocks of {n} steps "
        f"({steps} steps per figure)"
    )
    print(f"  physics only (no camera obs)   {1000 * med['physics']:7.1f} ms/step")
    print(f"  render agentview               {1000 * (med['agentview'] - med['physics']):7.1f} ms/step")
    print(f"  render wrist camera            {1000 * (med['agentview+wrist'] - med['agentview']):7.1f} ms/step")
    print(f"  raw env.step, agentview        {1000 * raw_med:7.1f} ms/step")
    print(f"  harness step, agentview        {1000 * harness_med:7.1f} ms/step")
    print(f"  harness overhead               {100 * (harness_med / raw_med - 1):+7.1f} %  (target <= 10%)")


if __name__ == "__main__":
    main()

"""SIMPLER WidowX on its two simulators, the same actions on the same grid cells: how different are they?

For each carrot-on-plate grid cell (`--cells`), the scripted WidowX expert drives the ManiSkill3 backend
closed loop and its actions are recorded; the same actions are then replayed open loop on the SimplerEnv
backend (env workers in SimplerEnv's own environment). Both run on stand-in stages where the stage mesh
is missing (`--stand-ins` semantics), through the engine's own env workers. Per episode it prints success
under each backend's rule (ManiSkill3's own, SimplerEnv's rule computed on ManiSkill3, SimplerEnv's),
grasp, and the largest and final distance between the two backends' end-effector and carrot positions
(robot base frame). The two are different protocols; this says by how much, per cell.

    python benchmarks/simpler_backend_agreement.py [--cells 8] [--task 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qdepth_bench.core.policy import EpisodeContext
from qdepth_bench.eval.messages import Chunk, Died, Ended, Fatal, FromWorker, Observation, StartEpisode, WorkerSettings
from qdepth_bench.eval.pool import WorkerPool, make_pool
from qdepth_bench.registry.policies import make_policy
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry


def reply(pool: WorkerPool) -> FromWorker:
    while True:
        for _, message in pool.poll(600):
            if isinstance(message, Fatal | Died):
                raise SystemExit(f"{message.kind}: {message}")
            return message


def drive(pool: WorkerPool, episode, actions: list[np.ndarray] | None, policy=None) -> dict:
    """One episode on the pool's worker: closed loop with `policy` (recording its actions) or replaying
    `actions`; the per-step end effector and source positions, and how it ended."""
    pool.send(0, StartEpisode(episode))
    message = reply(pool)
    ee, source, taken = [], [], []
    if policy is not None:
        policy.reset(EpisodeContext(episode.key, episode.seed, None))
    while isinstance(message, Observation):
        obs = message.observation
        ee.append(obs.privileged[0]["ee"])
        source.append(obs.privileged[0]["source"])
        if policy is not None:
            action = policy.act(obs)[0, 0]
        elif len(taken) < len(actions or []):
            action = actions[len(taken)]
        else:
            action = np.array([0, 0, 0, 0, 0, 0, 1.0])
        taken.append(np.asarray(action, dtype=np.float64))
        pool.send(0, Chunk(np.asarray(action, dtype=np.float32)[None]))
        message = reply(pool)
    assert isinstance(message, Ended)
    result = message.result
    return {"ee": np.array(ee), "source": np.array(source), "actions": taken, "result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--task", type=int, default=0)
    args = parser.parse_args()
    base = suite_registry().suites["simpler_widowx"].with_overrides({"stand_ins": True})
    policy = make_policy("scripted-widowx")
    specs = {"maniskill3": base, "simpler_env": base.with_backend("simpler_env")}
    episodes = make_backend(specs["maniskill3"]).episodes([args.task], args.cells, 0)
    runs: dict[str, list[dict]] = {}
    for name, spec in specs.items():
        pool = make_pool(1, WorkerSettings(spec, policy.requirements, "agreement"))
        started = time.perf_counter()
        try:
            if name == "maniskill3":
                runs[name] = [drive(pool, e, None, policy) for e in episodes]
            else:
                runs[name] = [drive(pool, e, r["actions"]) for e, r in zip(episodes, runs["maniskill3"], strict=True)]
        finally:
            pool.close()
        steps, seconds = sum(r["result"].steps for r in runs[name]), time.perf_counter() - started
        print(f"{name}: {steps} steps in {seconds:.0f} s ({steps / seconds:.1f} steps/s, setup included)")
    header = (
        "cell  ms3 success  ms3 SimplerEnv-rule  simpler_env success  grasp ms3/se  max|d ee| mm  final|d carrot| mm"
    )
    print(header)
    agree = 0
    for episode, ms3, se in zip(episodes, runs["maniskill3"], runs["simpler_env"], strict=True):
        n = min(len(ms3["ee"]), len(se["ee"]))
        d_ee = np.linalg.norm(ms3["ee"][:n] - se["ee"][:n], axis=1).max() * 1000
        d_src = np.linalg.norm(ms3["source"][n - 1] - se["source"][n - 1]) * 1000
        a, b = ms3["result"], se["result"]
        rule = a.metrics.get("success_simpler_rule")
        agree += (a.status == "success") == (b.status == "success")
        print(
            f"{episode.episode_index:>4}  {a.status == 'success'!s:>11}  {rule!s:>17}  {b.status == 'success'!s:>19}  "
            f"{a.partial_success}/{b.partial_success}  {d_ee:>12.1f}  {d_src:>18.1f}"
        )
    ms3_rate = np.mean([r["result"].status == "success" for r in runs["maniskill3"]])
    se_rate = np.mean([r["result"].status == "success" for r in runs["simpler_env"]])
    print(
        f"success: maniskill3 {ms3_rate:.0%}, simpler_env {se_rate:.0%} (same actions); "
        f"same outcome in {agree}/{len(episodes)} cells"
    )


if __name__ == "__main__":
    main()

"""Rollout engine throughput against a plain sequential loop, and how much batching saves policy calls.

Side by side in one run, on the same suite, tasks and episodes, with the `noop` policy cut to chunks of 4
(`--chunk`; its call costs nothing):
  1. the reference: one process, one env per task, reset then step in a plain Python loop that renders every
     step, settle steps included, as openpi's LIBERO loop, LeRobot's eval and vla-evaluation-harness do. On
     LIBERO it is LIBERO's own env driven as openpi's example drives it (a hard reset per episode, LIBERO's
     default), followed by the same loop on the harness's env (soft resets, `Env.render_every_step`), so
     the part of the gain that comes from resets shows apart; elsewhere it is the harness's env;
  2. the same loop with the software renderer held to one core, for context (`--one-core`);
  3. the engine with 1 env worker, rendering only the steps a policy reads (the last of each chunk);
  4. the engine with N env workers, the same.
Each prints env steps/s (setup included: env construction, worker start) and its ratio to the reference.
Then, with `noop` made to cost a fixed time per call (`call_seconds`, like a model on a GPU), the engine
with 1 and with N workers: policy calls per env step and the ratio, which batching should bring close to N.
It also checks that 1 and N workers record the same per-episode outcomes.

    python benchmarks/rollout_throughput.py [--suite libero_object] [--tasks 0,1] [--episodes 2]
        [--max-steps 280] [--workers 2] [--chunk 4] [--one-core] [--call-seconds 0.25] [--stand-ins]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from qdepth_bench.eval.engine import EngineOptions, EngineStats, execute
from qdepth_bench.eval.plan import Selection, plan_run
from qdepth_bench.eval.timing import describe
from qdepth_bench.registry.policies import make_policy
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.results.store import Store


def plain_loop(spec, task_ids: list[int], episodes: int, chunk: int) -> tuple[int, float]:
    """The reference: what a sequential evaluation script does, with no engine at all."""
    backend = make_backend(spec)
    policy = make_policy("noop", {"chunk_size": str(chunk)})
    noop = np.asarray(spec.protocol["noop_action"], dtype=np.float64)
    max_steps, steps = int(spec.protocol["max_steps"]), 0
    start = time.perf_counter()
    for task_id in task_ids:
        env = backend.make_env(task_id, policy.requirements)
        env.render_every_step = True
        for episode in backend.episodes([task_id], episodes, int(spec.protocol["env_seed"])):
            env.reset(episode)
            for _ in range(max_steps):
                steps += 1
                if env.step(noop).done:
                    break
        env.close()
    return steps, time.perf_counter() - start


def anchor_loop(spec, task_ids: list[int], episodes: int) -> tuple[int, float]:
    """LIBERO only: the reference loop as openpi's LIBERO example writes it, on LIBERO's own env: per task one
    env; per episode seed, reset (LIBERO's default hard reset, which rebuilds the model), the official initial
    state, the settle steps, then every step rendered. Only the main camera is rendered, as for the engine
    (openpi's example also renders the wrist camera); no image processing per step, so this reference is, if
    anything, faster than the example itself."""
    backend = make_backend(spec)  # imports LIBERO with its config and assets set, as the harness does
    from libero.libero.envs import OffScreenRenderEnv

    protocol = spec.protocol
    noop = np.asarray(protocol["noop_action"], dtype=np.float64)
    size, steps = int(protocol["render_size"]), 0
    start = time.perf_counter()
    for task_id in task_ids:
        task = backend.suite.get_task(task_id)
        init_states = backend.suite.get_task_init_states(task_id)
        env = OffScreenRenderEnv(
            bddl_file_name=str(backend.bddl_root / task.problem_folder / task.bddl_file),
            camera_heights=size,
            camera_widths=size,
            camera_names=[protocol["cameras"]["main"]],
        )
        env.seed(int(protocol["env_seed"]))
        for index in range(episodes):
            env.reset()
            env.set_init_state(init_states[index])
            for _ in range(int(protocol["settle_steps"])):
                env.step(noop)
            for _ in range(int(protocol["max_steps"])):
                steps += 1
                if env.step(noop)[2]:
                    break
        env.close()
    return steps, time.perf_counter() - start


def _plain_loop_child(spec, task_ids: list[int], episodes: int, chunk: int, out) -> None:
    out.put(plain_loop(spec, task_ids, episodes, chunk))


def plain_loop_one_core(spec, task_ids: list[int], episodes: int, chunk: int) -> tuple[int, float]:
    """The reference again in a fresh process whose renderer uses no extra threads (LP_NUM_THREADS=0).

    Mesa's llvmpipe renders each frame with a thread per core, so the plain loop above already keeps more
    than one core busy; this row shows what one core alone does.
    """
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    previous = os.environ.get("LP_NUM_THREADS")
    os.environ["LP_NUM_THREADS"] = "0"
    try:
        child = ctx.Process(target=_plain_loop_child, args=(spec, task_ids, episodes, chunk, out))
        child.start()
    finally:
        if previous is None:
            del os.environ["LP_NUM_THREADS"]
        else:
            os.environ["LP_NUM_THREADS"] = previous
    result = out.get()
    child.join()
    return result


def engine_run(
    spec, tasks: str, episodes: int, workers: int, folder: Path, chunk: int, call_seconds: float = 0.0
) -> tuple[EngineStats, list[tuple]]:
    """One fresh run of the engine into its own database; its stats and per-episode outcomes."""
    store = Store(folder / f"w{workers}-c{call_seconds}.sqlite")
    policy = make_policy("noop", {"call_seconds": str(call_seconds), "chunk_size": str(chunk)})
    plan = plan_run(store, spec, make_backend(spec), policy, Selection.parse(tasks, episodes), "benchmark")
    stats = execute(store, plan, EngineOptions(workers=workers))
    rows = [
        tuple(r)
        for r in store.db.execute(
            "select task_id, episode_index, seed, status, steps from episodes order by task_id, episode_index"
        ).fetchall()
    ]
    return stats, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--tasks", default="0,1")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task")
    parser.add_argument("--max-steps", type=int, default=None, help="default: the protocol's")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--chunk", type=int, default=4, help="actions per noop call (cut at the replan steps)")
    parser.add_argument("--one-core", action="store_true", help="add the plain loop with a one-core renderer")
    parser.add_argument("--call-seconds", type=float, default=0.25, help="policy cost per call (batching part)")
    parser.add_argument("--batching-max-steps", type=int, default=60)
    parser.add_argument("--only", choices=["throughput", "batching"], default=None, help="run one part")
    parser.add_argument(
        "--stand-ins", action="store_true", help="SIMPLER: a stand-in table where the stage mesh is missing"
    )
    args = parser.parse_args()

    base = suite_registry().suites[args.suite]
    overrides = {"max_steps": args.max_steps, "stand_ins": args.stand_ins or None}
    spec = base.with_overrides({k: v for k, v in overrides.items() if v is not None})
    task_ids = Selection.parse(args.tasks).task_ids(spec)
    n = args.workers
    print(
        f"{spec.name} tasks {task_ids}, {args.episodes} episodes each, max {spec.protocol['max_steps']} steps, "
        f"replan {spec.protocol['replan_steps']}, noop policy in chunks of {args.chunk}, {os.cpu_count()} cores, "
        f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', 'unset')}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only != "batching":
            throughput(spec, args.tasks, task_ids, args.episodes, n, args.chunk, args.one_core, folder)
        if args.only != "throughput":
            batching(spec, args.tasks, args.episodes, n, args.batching_max_steps, args.chunk, args.call_seconds, folder)


def throughput(
    spec, tasks: str, task_ids: list[int], episodes: int, n: int, chunk: int, one_core: bool, folder: Path
) -> None:
    """Plain loop (renders every step) vs engine(1) vs engine(n) (render what is read), and a check that
    the engine's results agree across worker counts."""
    if spec.backend == "libero":
        steps, wall = anchor_loop(spec, task_ids, episodes)
        reference = steps / wall
        print(
            f"  plain loop            {reference:7.2f} env steps/s  ({steps} steps in {wall:.1f} s)  the reference: "
            "LIBERO's env as openpi's example drives it"
        )
        steps0, wall0 = plain_loop(spec, task_ids, episodes, chunk)
        print(
            f"  harness env, eager    {steps0 / wall0:7.2f} env steps/s  ({steps0} steps in {wall0:.1f} s)  "
            f"{steps0 / wall0 / reference:5.2f}x plain (the same loop on the harness's env: soft resets, every "
            "step rendered)"
        )
    else:
        steps, wall = plain_loop(spec, task_ids, episodes, chunk)
        reference = steps / wall
        print(f"  plain loop            {reference:7.2f} env steps/s  ({steps} steps in {wall:.1f} s)  the reference")
    if one_core:
        steps1, wall1 = plain_loop_one_core(spec, task_ids, episodes, chunk)
        print(
            f"  plain loop, one core  {steps1 / wall1:7.2f} env steps/s  ({steps1} steps in {wall1:.1f} s)  "
            f"{steps1 / wall1 / reference:5.2f}x plain (renderer without its own threads)"
        )
    one, rows_one = engine_run(spec, tasks, episodes, 1, folder, chunk)
    print(
        f"  engine, 1 worker      {one.steps_per_s:7.2f} env steps/s  ({one.env_steps} steps in {one.wall_s:.1f} s)"
        f"  {one.steps_per_s / reference:5.2f}x plain  (target >= 2.5x)"
    )
    print(f"      time: {describe(one.phases)}")
    print(f"      {step_ceiling(one)}")
    many, rows_many = engine_run(spec, tasks, episodes, n, folder, chunk)
    print(
        f"  engine, {n} workers     {many.steps_per_s:7.2f} env steps/s  ({many.env_steps} steps in "
        f"{many.wall_s:.1f} s)  {many.steps_per_s / reference:5.2f}x plain, "
        f"{many.steps_per_s / one.steps_per_s:4.2f}x engine(1)  (target >= {2 * n:.0f}x plain)"
    )
    print(f"      time: {describe(many.phases)}")
    print(f"  same per-episode outcomes with 1 and {n} workers: {'yes' if rows_one == rows_many else 'NO'}")


def step_ceiling(stats: EngineStats) -> str:
    """What lazy rendering can give at most on this machine, from the engine's own step timings: an observed
    step's cost over the mean step's (the ratio to the plain loop if setup and resets cost nothing)."""
    total = {key: sum(t[key] for t in stats.episode_timings) for key in stats.episode_timings[0]}
    if not total["observed_steps"] or not total["blind_steps"]:
        return "every step was observed: no ceiling to compute"
    observed = total["observed_step_s"] / total["observed_steps"]
    blind = total["blind_step_s"] / total["blind_steps"]
    mean = (total["observed_step_s"] + total["blind_step_s"]) / (total["observed_steps"] + total["blind_steps"])
    return (
        f"steps: {1000 * observed:.0f} ms observed, {1000 * blind:.0f} ms unobserved, {1000 * mean:.0f} ms mean: "
        f"at most {observed / mean:.2f}x a loop that renders every step, before setup and resets"
    )


def batching(
    spec, tasks: str, episodes: int, n: int, max_steps: int, chunk: int, call_seconds: float, folder: Path
) -> None:
    """Policy calls per env step with 1 and n workers when every call costs `call_seconds`."""
    short = spec.with_overrides({"max_steps": max_steps})
    print(f"batching: noop costing {call_seconds} s per call, max {max_steps} steps")
    b_one, _ = engine_run(short, tasks, episodes, 1, folder, chunk, call_seconds)
    b_many, _ = engine_run(short, tasks, episodes, n, folder, chunk, call_seconds)
    for label, s in (("1 worker ", b_one), (f"{n} workers", b_many)):
        print(
            f"  engine, {label}     {s.calls_per_step:6.3f} policy calls per env step, "
            f"{s.policy_rows / max(s.policy_calls, 1):4.2f} rows per call, {s.steps_per_s:6.2f} env steps/s"
        )
    print(
        f"  calls per step cut by {b_one.calls_per_step / max(b_many.calls_per_step, 1e-9):4.2f}x with {n} "
        f"workers (ideal {n}x); throughput {b_many.steps_per_s / b_one.steps_per_s:4.2f}x"
    )


if __name__ == "__main__":
    main()

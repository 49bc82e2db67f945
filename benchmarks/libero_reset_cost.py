"""What an episode's reset costs: LIBERO's standard hard reset against the harness's soft reset + replay.

Both start an episode bit for bit in the same place (tests/test_libero_runs.py checks the trajectories).
A hard reset rebuilds the MuJoCo model from the task's XML; the harness builds the env as that reset would
leave it (or runs one hard reset per other seed), then resets softly and restores what the hard reset left
(`HardResetState`). Each reset here is the whole
`LiberoEnv.reset` of an official initial state (seed, reset, initial state, the 10 settle steps, which
render), and its reset part alone (seed and reset). The two kinds alternate on one env, so machine noise
hits both alike; the figures to read are the ratios.

    python benchmarks/libero_reset_cost.py [--suite libero_object] [--task 0] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time

from qdepth_bench.core.policy import PolicyRequirements
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    spec = suite_registry().suites[args.suite]
    backend = make_backend(spec)
    episodes = backend.episodes([args.task], 2, int(spec.protocol["env_seed"]))
    env = backend.make_env(args.task, PolicyRequirements())
    seed = int(spec.protocol["env_seed"])
    times: dict[str, list[float]] = {"hard": [], "soft": [], "hard_part": [], "soft_part": []}
    try:
        env.reset(episodes[0])
        for _ in range(args.rounds):
            for kind, episode in (("hard", episodes[0]), ("soft", episodes[1])):
                for suffix, run in (("", env.reset), ("_part", lambda e: env._fresh_episode(e, seed))):
                    if kind == "hard":  # a replay kept for another seed: the model is rebuilt
                        env._hard_reset_state = dataclasses.replace(env._hard_reset_state, seed=seed + 1)
                    times[kind + suffix].append(timed(functools.partial(run, episode)))
    finally:
        env.close()
    m = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.suite} task {args.task}, {args.rounds} rounds, median seconds per episode start:")
    print(f"{'':40s}{'whole reset':>12s}{'reset part':>12s}")
    print(f"{'  LIBERO hard reset (model rebuilt)':40s}{m['hard']:11.3f}s{m['hard_part']:11.3f}s")
    print(f"{'  harness soft reset + replayed state':40s}{m['soft']:11.3f}s{m['soft_part']:11.3f}s")
    print(f"{'  ratio hard / soft':40s}{m['hard'] / m['soft']:11.1f}x{m['hard_part'] / m['soft_part']:11.1f}x")


if __name__ == "__main__":
    main()

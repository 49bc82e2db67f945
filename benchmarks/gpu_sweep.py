"""The GPU-box plan, as a script: LIBERO episodes per hour of a QDepth-VLA policy on one GPU with many env
workers, swept over worker counts and batching, with GPU utilisation and where the time goes.

For the first machine with a GPU and many cores. It writes a checkpoint of the chosen size with random
weights (the real loading path; `full` is the paper's 3B-parameter shape), then for each worker count runs
the same LIBERO episodes through the engine into a scratch database, the policy on `--device`, once with
`batch_invariant=true` (each row through the model alone, bit-reproducible) and once with one batched pass
(`false`). It prints per configuration: episodes/hour, env steps/s, policy calls and rows per call, the share
of wall time the policy took, mean and peak GPU utilisation (nvidia-smi, sampled twice a second) and the
engine's phase split. vla-evaluation-harness reports 2,000 LIBERO episodes in 18 minutes on one H100
(about 6,700 episodes/hour); this prints what this engine does on the same kind of machine.

    python benchmarks/gpu_sweep.py --size full --device cuda --workers 8,16,32 --tasks 0-9 --episodes 4
    python benchmarks/gpu_sweep.py --size tiny --device cpu --workers 1,2 --tasks 0 --episodes 2 --max-steps 20
        (a smoke run of the same code path on a CPU machine)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from qdepth_bench.eval.engine import EngineOptions, execute
from qdepth_bench.eval.plan import Selection, plan_run
from qdepth_bench.eval.timing import describe
from qdepth_bench.models.qdepth.checkpoint import NormStats, save_checkpoint
from qdepth_bench.models.qdepth.config import build_config
from qdepth_bench.models.qdepth.model import QDepthVLA
from qdepth_bench.registry.policies import make_policy
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.results.store import Store


class GpuSampler:
    """Samples GPU utilisation (percent) with nvidia-smi every `period` seconds while active."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.split()
                if out:
                    self.samples.append(float(out[0]))
            except (OSError, subprocess.TimeoutExpired, ValueError):
                return  # no NVIDIA GPU: nothing to sample
            self._stop.wait(self.period)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> str:
        if not self.samples:
            return "–"
        return f"{statistics.mean(self.samples):.0f}% mean, {max(self.samples):.0f}% peak"


def random_checkpoint(size: str, folder: Path) -> Path:
    """A checkpoint of the named size with random weights, written where the policy loads it from."""
    torch.manual_seed(0)
    config = build_config(size)
    model = QDepthVLA(config)
    stats = NormStats.identity(config.state_dim, config.action_dim)
    return save_checkpoint(folder, config, model.state_dict(), stats, "qdepth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="full", help="QDepth size: full (the paper's), medium or tiny")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--tasks", default="0-9")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per task")
    parser.add_argument("--max-steps", type=int, default=None, help="override the protocol's (smoke runs)")
    parser.add_argument("--workers", default="8,16,32")
    parser.add_argument("--batch-modes", default="true,false", help="batch_invariant values to sweep")
    args = parser.parse_args()
    spec = suite_registry().suites[args.suite]
    if args.max_steps is not None:
        spec = spec.with_overrides({"max_steps": args.max_steps})
    backend = make_backend(spec)
    print(f"{args.size} QDepth-VLA (random weights) on {args.device}; {args.suite} tasks {args.tasks}, "
          f"{args.episodes} episodes each, {spec.protocol['max_steps']} max steps")  # fmt: skip
    header = f"{'workers':>7} {'batch_inv':>9} {'episodes/h':>10} {'steps/s':>8} {'calls':>6} {'rows/call':>9} "
    header += f"{'policy %':>8} {'GPU':>16}  phases"
    with tempfile.TemporaryDirectory(prefix="qdepth-gpu-sweep-") as folder:
        started = time.perf_counter()
        checkpoint = random_checkpoint(args.size, Path(folder) / "checkpoint")
        print(f"checkpoint written in {time.perf_counter() - started:.0f} s")
        print(header)
        for invariant in args.batch_modes.split(","):
            options = {"checkpoint": str(checkpoint), "device": args.device, "batch_invariant": invariant}
            policy = make_policy("qdepth", options)
            try:
                for workers in (int(w) for w in args.workers.split(",")):
                    store = Store(Path(folder) / f"w{workers}-{invariant}.sqlite")
                    selection = Selection.parse(args.tasks, args.episodes)
                    plan = plan_run(store, spec, backend, policy, selection, "gpu_sweep")
                    with GpuSampler() as gpu:
                        stats = execute(store, plan, EngineOptions(workers=workers))
                    rows = stats.policy_rows / stats.policy_calls if stats.policy_calls else 0.0
                    share = 100 * stats.policy_seconds / stats.wall_s if stats.wall_s else 0.0
                    print(
                        f"{workers:>7} {invariant:>9} {3600 * stats.episodes / stats.wall_s:>10.0f} "
                        f"{stats.steps_per_s:>8.1f} {stats.policy_calls:>6} {rows:>9.2f} {share:>8.0f} "
                        f"{gpu.summary():>16}  {describe(stats.phases)}",
                        flush=True,
                    )
            finally:
                policy.close()


if __name__ == "__main__":
    main()

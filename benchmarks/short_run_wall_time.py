"""Wall time of short runs end to end through the CLI, as a user starts them: 1 vs N workers.

Each row is one fresh `qdepth-bench run` process into its own scratch database (interpreter start, policy
load, worker start, env build, episodes, report), timed from outside, with the time to the first policy
call and the episode-seconds split the CLI prints itself, and how many cores the run kept busy on average
(CPU seconds of the CLI and its workers over wall time). The ratio row is the target of short runs: N
workers should finish the larger count in <= 0.6x the time of one worker; beside it, the best ratio the CPU
seconds the N-worker run used allow on this machine's cores.

    python benchmarks/short_run_wall_time.py [--suite libero_object] [--task 0] [--policy qdepth]
        [--episodes 2,4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli_run(suite: str, task: str, policy: str, episodes: int, workers: int, folder: Path) -> tuple[float, float, str]:
    """Seconds one CLI run takes, the CPU seconds it and its workers used, and its 'time:' line."""
    exe = Path(sys.executable).with_name("qdepth-bench")
    db = folder / f"e{episodes}-w{workers}.sqlite"
    argv = [str(exe), "run", suite, "--policy", policy, "--tasks", task, "--episodes", str(episodes)]
    argv += ["--workers", str(workers), "--db", str(db)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"}, cwd=folder)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    line = next((m.group(1) for m in re.finditer(r"^time: (.*)$", result.stdout, re.M)), "")
    return wall, cpu, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--task", default="0")
    parser.add_argument("--policy", default="qdepth")
    parser.add_argument("--episodes", default="2,4", help="comma-separated episode counts")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    counts = [int(c) for c in args.episodes.split(",")]
    print(f"{args.suite} task {args.task}, policy {args.policy}, {os.cpu_count()} cores; one CLI process per row")
    with tempfile.TemporaryDirectory() as tmp:
        walls: dict[tuple[int, int], float] = {}
        cpus: dict[tuple[int, int], float] = {}
        for episodes in counts:
            for workers in (1, args.workers):
                wall, cpu, line = cli_run(args.suite, args.task, args.policy, episodes, workers, Path(tmp))
                walls[episodes, workers], cpus[episodes, workers] = wall, cpu
                print(
                    f"  {episodes} episodes, {workers} worker{'s' if workers > 1 else ' '}  {wall:6.1f} s, "
                    f"{cpu / wall:4.2f} cores busy   {line}"
                )
        cores = os.cpu_count() or 1
        for episodes in counts:
            ratio = walls[episodes, args.workers] / walls[episodes, 1]
            target = "  (target <= 0.60x)" if episodes == max(counts) else ""
            # N workers cannot finish the CPU-seconds they used in less than that over the machine's cores
            floor = min(cpus[episodes, args.workers] / min(cores, args.workers + 1), walls[episodes, args.workers])
            print(
                f"  {episodes} episodes: {args.workers} workers take {ratio:4.2f}x the time of 1{target}; with every "
                f"core busy the CPU time they used allows {floor / walls[episodes, 1]:4.2f}x at best"
            )


if __name__ == "__main__":
    main()

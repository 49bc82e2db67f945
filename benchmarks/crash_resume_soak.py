"""Crash and resume, again and again: a real LIBERO run whose driver is killed (SIGKILL, no cleanup) at
random moments N times and resumed after each, then run to the end. Prints, per kill, when it struck and
how many episodes were recorded, then checks that the run holds exactly the planned episodes, each recorded
once (no episode has two outcome lines in the run log), and ends `finished`.

    python benchmarks/crash_resume_soak.py [--kills 5] [--episodes 40] [--max-steps 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=40, help="episodes of libero_object task 0")
    parser.add_argument(
        "--max-steps", type=int, default=200, help="steps per episode (noop: every episode runs them all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    exe = str(Path(sys.executable).with_name("qdepth-bench"))
    with tempfile.TemporaryDirectory(prefix="qdepth-soak-") as folder:
        db = Path(folder) / "soak.sqlite"
        command = [
            exe,
            "run",
            "libero_object",
            "--policy",
            "noop",
            "--tasks",
            "0",
            "--episodes",
            str(args.episodes),
            "--max-steps",
            str(args.max_steps),
            "--workers",
            "2",
            "--db",
            str(db),
        ]
        for kill in range(1, args.kills + 1):
            before = count(db, "select count(*) from episodes where status != 'error'")
            proc = subprocess.Popen(
                command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            started = time.time()
            # the first kill strikes during start-up; later ones after 1-4 more episodes plus a random part of
            # a second, so they land mid-episode, mid-commit or between episodes of a running engine
            wanted = 0 if kill == 1 else before + rng.randint(1, 4)
            while wanted and proc.poll() is None and count(db, "select count(*) from episodes") < wanted:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 8.0 if kill == 1 else 1.5))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, as a power cut would
            proc.wait()
            recorded = count(db, "select count(*) from episodes where status != 'error'")
            print(f"kill {kill}: after {time.time() - started:.1f} s, {recorded}/{args.episodes} episodes recorded")
        final = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        conn = sqlite3.connect(db)
        run_id, status = conn.execute("select run_id, status from runs").fetchone()
        conn.close()
        log = (Path(folder) / "logs" / f"soak-{run_id}.log").read_text()
        outcomes = Counter(
            line.split()[2]
            for line in log.splitlines()
            if " episode " in line and " status=" in line and "status=error" not in line
        )
        recorded = count(db, "select count(*) from episodes where status != 'error'")
        print(f"final resume: exit {final.returncode}; run status {status}; {recorded}/{args.episodes} episodes")
        twice = [key for key, n in outcomes.items() if n > 1]
        print(f"episodes with more than one recorded outcome: {len(twice)} {twice if twice else ''}")
        # (a kill between an episode's commit and its log line can leave it without a line, never with two)
        ok = final.returncode == 0 and status == "finished" and recorded == args.episodes and not twice
        print("PASS" if ok else "FAIL")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

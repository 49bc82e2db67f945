"""Crash and resume, again and again: a real LIBERO run whose driver is killed (SIGKILL, no cleanup) at
random moments N times and resumed after each, then run to the end. Prints, per kill, when it struck and
how many episodes were recorded, then checks that the run holds exactly the planned episodes, each recorded
once (no episode has two outcome lines in the run log), and ends `finished`.

    python benchmarks/crash_resume_soak.py [--kills 5] [--episodes 8] [--seed 0]
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
    parser.add_argument("--episodes", type=int, default=8, help="episodes of libero_object task 0")
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
            "40",
            "--workers",
            "2",
            "--db",
            str(db),
        ]
        for kill in range(1, args.kills + 1):
            proc = subprocess.Popen(
                command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            delay = rng.uniform(5.0, 60.0)  # start-up, mid-episode or between episodes
            time.sleep(delay)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, as a power cut would
            proc.wait()
            recorded = count(db, "select count(*) from episodes where status != 'error'")
            print(f"kill {kill}: after {delay:.1f} s, {recorded}/{args.episodes} episodes recorded")
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

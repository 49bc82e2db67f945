"""What serving a policy over the websocket protocol costs per call, on loopback.

Starts `qdepth-bench serve --policy noop` (once asking for no camera, once for 224 px main + wrist cameras),
then times, alternating call by call so noise hits both alike: the policy called in-process, and the same
policy called through `--policy remote` (msgpack encoding, websocket round trip, server-side validation).
Prints median and 90th-percentile milliseconds per call and the difference.

    python benchmarks/remote_overhead.py [--calls 200] [--batch 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, TaskInfo
from qdepth_bench.registry.policies import make_policy

TASK = TaskInfo(
    "libero_object",
    0,
    "task",
    "pick up the alphabet soup and place it in the basket",
    "panda",
    (-1.0,) * 7,
    (1.0,) * 7,
    (0.0,) * 6 + (-1.0,),
    "libero",
)


def start_server(cameras: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("qdepth-bench")
    proc = subprocess.Popen(
        [str(exe), "serve", "--policy", "noop", "--policy-arg", f"cameras={cameras}", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start")


def observation(cameras: list[str], batch: int) -> ObservationBatch:
    rng = np.random.default_rng(0)
    images = {role: rng.integers(0, 255, (batch, 224, 224, 3), dtype=np.uint8) for role in cameras}
    return ObservationBatch(
        [f"e/{i}" for i in range(batch)], images, rng.normal(size=(batch, 8)), [TASK.instruction] * batch
    )


def ms(values: list[float]) -> str:
    values = sorted(values)
    return f"median {1000 * statistics.median(values):7.2f} ms, p90 {1000 * values[int(0.9 * len(values))]:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    print(f"noop policy, batch {args.batch}, {args.calls} calls each, loopback")
    for label, cameras in (("small (state + instruction)", []), ("two 224 px cameras", ["main", "wrist"])):
        proc, port = start_server(",".join(cameras))
        try:
            local = make_policy("noop", {"cameras": ",".join(cameras)})
            remote = make_policy("remote", {"url": f"ws://127.0.0.1:{port}"})
            obs = observation(cameras, args.batch)
            for policy in (local, remote):
                for key in obs.keys:
                    policy.reset(EpisodeContext(key, TASK, 0))
                policy.act(obs)  # warm-up (and the remote's first call carries the resets)
            times: dict[str, list[float]] = {"local": [], "remote": []}
            for _ in range(args.calls):
                for name, policy in (("local", local), ("remote", remote)):
                    start = time.perf_counter()
                    policy.act(obs)
                    times[name].append(time.perf_counter() - start)
            remote.close()
            size = sum(v.nbytes for v in obs.images.values()) + obs.state.nbytes
            overhead = statistics.median(times["remote"]) - statistics.median(times["local"])
            print(
                f"{label:>28} ({size / 1024:7.1f} KiB): in-process {ms(times['local'])} | remote "
                f"{ms(times['remote'])} | overhead {1000 * overhead:6.2f} ms"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()

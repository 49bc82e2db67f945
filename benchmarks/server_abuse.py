"""Can one hostile client stall a policy server? Loopback only, bounded loops, stops by itself.

Starts `qdepth-bench serve --policy noop` on 127.0.0.1, then measures one well-behaved client (openpi-style
requests with two 224 px images) twice, in the same run: alone, and while a second client sends, in a loop,
a huge msgpack map (millions of keys), arrays with missing fields, garbage bytes and text frames. Prints the
good client's requests/s and p50/p99 latency in both phases, and the ratio of the p99s (target: within 5x),
plus how many abusive requests the server answered and what it said to each kind.

    python benchmarks/server_abuse.py [--requests 400] [--max-request-mb 64]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from websockets.sync.client import connect

from qdepth_bench.remote.wire import pack, unpack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, max_request_mb: int) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("qdepth-bench")
    proc = subprocess.Popen(
        [str(exe), "serve", "--policy", "noop", "--port", str(port), "--max-request-mb", str(max_request_mb)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not come up within 120 s")


def good_request() -> bytes:
    rng = np.random.default_rng(0)
    return pack(
        {
            "observation/image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
            "observation/state": rng.normal(size=8).astype(np.float32),
            "prompt": "pick up the soup",
        }
    )


def hostile_requests(max_request_mb: int) -> dict[str, bytes | str]:
    """Each kind of abuse once; the big map fills most of the allowed request size."""
    keys = int(0.9 * (max_request_mb << 20) / 10)  # msgpack: 5 bytes per int key and per value past 65535
    big = msgpack.packb({i: i for i in range(keys)})
    return {
        f"map of {keys:,} keys ({len(big) / 2**20:.0f} MiB)": big,
        "array without data": msgpack.packb({"observation/state": {b"__ndarray__": True, b"dtype": "<f4"}}),
        "garbage bytes": os.urandom(4096),
        "text frame": "hello",
    }


def timed_requests(port: int, n: int) -> list[float]:
    """Seconds per request of one client sending `n` valid requests one after another."""
    message, latencies = good_request(), []
    with connect(f"ws://127.0.0.1:{port}", max_size=None, compression=None) as ws:
        ws.recv(timeout=60)  # metadata
        for _ in range(n):
            started = time.perf_counter()
            ws.send(message)
            reply = ws.recv(timeout=60)
            latencies.append(time.perf_counter() - started)
            if isinstance(reply, str):
                raise SystemExit(f"the good client got an error: {reply}")
            unpack(reply)
    return latencies


def abuse(port: int, max_request_mb: int, stop: Any, results: Any) -> None:
    """In its own process (so its own encoding never stalls the measuring client): send the hostile requests
    round-robin until `stop` is set, at most 10,000; put (count, last reply per kind) on `results`."""
    requests, replies, sent = hostile_requests(max_request_mb), {}, 0
    with connect(f"ws://127.0.0.1:{port}", max_size=None, compression=None) as ws:
        ws.recv(timeout=60)
        stop_at = time.time() + 600
        while not stop.is_set() and sent < 10_000 and time.time() < stop_at:
            for name, message in requests.items():
                ws.send(message)
                reply = ws.recv(timeout=120)
                replies[name] = reply if isinstance(reply, str) else "(actions)"
                sent += 1
    results.put((sent, replies))


def summary(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return len(latencies) / sum(latencies), 1000 * statistics.median(ordered), 1000 * p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="valid requests per phase")
    parser.add_argument("--max-request-mb", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    server = start_server(port, args.max_request_mb)
    try:
        timed_requests(port, 20)  # warm-up
        alone = timed_requests(port, args.requests)
        context = mp.get_context("spawn")
        stop, results = context.Event(), context.Queue()
        abuser = context.Process(target=abuse, args=(port, args.max_request_mb, stop, results))
        abuser.start()
        time.sleep(5.0)  # let the abuse start (the big map takes a moment to build)
        try:
            abused = timed_requests(port, args.requests)
        finally:
            stop.set()
            counted, replies = results.get(timeout=300)
            abuser.join(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{'phase':<28}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    for name, latencies in (("good client alone", alone), ("good client under abuse", abused)):
        rate, p50, p99 = summary(latencies)
        print(f"{name:<28}{rate:>12.0f}{p50:>10.2f}{p99:>10.2f}")
    ratio = summary(abused)[2] / summary(alone)[2]
    print(f"p99 under abuse / alone: {ratio:.2f}x (target <= 5x)")
    print(f"hostile requests answered meanwhile: {counted}")
    for name, reply in replies.items():
        print(f"  {name}: {reply[:150]}")


if __name__ == "__main__":
    main()

"""The cost of the first pass over an RLDS dataset (`RldsSource.index`: every episode record read once for its
lengths, instruction, state and actions) at two sizes, so its cost at Bridge V2's scale can be extrapolated.

Synthetic Bridge-layout TFRecords are written to a temporary folder: each episode is the committed Bridge
fixture's first episode (tests/data/rlds, written by tensorflow-datasets with Bridge's real feature spec: four
256 px JPEG cameras, 7-dim state and action, the 512-dim language embedding per step, episode metadata)
stretched to `--steps` steps by repeating its steps, serialised as a tf.train.Example in TFRecord framing by
the project's own writer (`datasets/rlds_writer.py`).

Each size is indexed in a fresh process (no index file beside the data), which prints the build time, the
peak RSS (VmHWM) above the process's RSS before the pass, and the bytes of the saved index, each also per
episode. The records were just written, so they are read from the page cache; the pass reads every byte of
every record (frames included), so on a cold disk it takes at least the dataset's size over the disk's read
rate. The line for Bridge's size is an extrapolation (the larger size plus the per-episode slope between
the two sizes), not a measurement.

    python benchmarks/rlds_index.py [--episodes 200 2000] [--steps 38] [--bridge-episodes 60000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qdepth_bench.datasets.rlds_writer import encode_example, tfrecord

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "rlds" / "bridge_dataset" / "1.0.0"


def stretched_episode(steps: int) -> dict[str, list[bytes] | np.ndarray]:
    """The fixture's first Bridge episode with its steps repeated to `steps` steps (episode fields kept)."""
    from qdepth_bench.datasets.rlds import _records, parse_example

    shard = sorted(FIXTURE.glob("bridge_dataset-train.tfrecord*"))[0]
    example = parse_example(next(_records(shard))[1])
    have = len(example["steps/is_first"])
    take = np.arange(steps) % have
    out: dict[str, list[bytes] | np.ndarray] = {}
    for key, value in example.items():
        if not key.startswith("steps/"):
            out[key] = value
        elif isinstance(value, list):
            out[key] = [value[i] for i in take]
        else:
            out[key] = value.reshape(have, -1)[take].reshape(-1)
    first = np.zeros(steps, np.int64)
    first[0] = 1
    out["steps/is_first"], out["steps/is_last"] = first, first[::-1].copy()
    return out


def write_dataset(folder: Path, episodes: int, steps: int, per_shard: int = 512) -> int:
    """A Bridge builder folder of `episodes` episodes; returns its bytes."""
    folder.mkdir(parents=True)
    for name in ("dataset_info.json", "features.json"):
        shutil.copy(FIXTURE / name, folder / name)
    frame = tfrecord(encode_example(stretched_episode(steps)))  # framed once, CRCs included, then repeated
    shards = -(-episodes // per_shard)
    for s in range(shards):
        count = min(per_shard, episodes - s * per_shard)
        (folder / f"bridge_dataset-train.tfrecord-{s:05d}-of-{shards:05d}").write_bytes(frame * count)
    return len(frame) * episodes


def measure(folder: Path) -> dict[str, float]:
    """Index `folder` in this process: seconds, peak RSS growth (bytes) and the saved index's bytes."""
    from qdepth_bench.datasets.rlds import RldsSource

    def status(field: str) -> int:
        """Bytes of /proc/self/status's `field`: VmHWM (this process's peak RSS; unlike ru_maxrss, not
        inherited from the parent that forked it) or VmRSS."""
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    source = RldsSource(folder, "bridge")
    before = status("VmRSS")
    started = time.perf_counter()
    index = source.index()
    seconds = time.perf_counter() - started
    saved = sum(p.stat().st_size for p in folder.glob("*qdepth_index.npz"))
    started = time.perf_counter()
    RldsSource(folder, "bridge").index()  # a later training: the saved index is read instead
    return {
        "episodes": len(index["length"]),
        "seconds": seconds,
        "rss_growth": status("VmHWM") - before,
        "index_bytes": saved,
        "cached_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, nargs=2, default=[200, 2000])
    parser.add_argument("--steps", type=int, default=38, help="steps per episode (Bridge V2 averages about 38)")
    parser.add_argument("--bridge-episodes", type=int, default=60000)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # a child process: index this folder
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.episodes:
            folder = Path(tmp) / f"bridge_{n}" / "1.0.0"
            size = write_dataset(folder, n, args.steps)
            child = subprocess.run(
                [sys.executable, __file__, "--measure", str(folder)], capture_output=True, text=True, check=True
            )
            row = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{n} episodes x {args.steps} steps ({size / 2**20:.0f} MiB of records): index built in "
                f"{row['seconds']:.2f} s ({1e3 * row['seconds'] / n:.2f} ms/episode, "
                f"{size / 2**20 / row['seconds']:.0f} MiB/s from the page cache), peak RSS +"
                f"{row['rss_growth'] / 2**20:.1f} MiB ({row['rss_growth'] / n / 1024:.1f} KiB/episode), saved index "
                f"{row['index_bytes'] / 2**20:.2f} MiB ({row['index_bytes'] / n / 1024:.2f} KiB/episode), "
                f"read back in {row['cached_seconds']:.3f} s"
            )
            shutil.rmtree(folder.parent)
    small, big = rows
    extra = args.bridge_episodes - big["episodes"]
    per = {
        k: (big[k] - small[k]) / (big["episodes"] - small["episodes"]) for k in ("seconds", "rss_growth", "index_bytes")
    }
    print(
        f"EXTRAPOLATED, not measured (the larger run plus the per-episode slope between the two runs) to "
        f"{args.bridge_episodes} episodes: index build about {(big['seconds'] + per['seconds'] * extra) / 60:.1f} min "
        f"from the page cache, peak RSS +{(big['rss_growth'] + per['rss_growth'] * extra) / 2**20:.0f} MiB, saved "
        f"index {(big['index_bytes'] + per['index_bytes'] * extra) / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()

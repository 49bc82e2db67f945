"""What `run --depth-metrics` costs: episode wall time with and without it, side by side.

The same episodes run twice on one engine and one loaded policy, into two scratch databases: without depth
metrics and with them (the simulator also renders the main camera's depth at observed frames; the policy
returns its depth logits; the engine encodes the depth with the policy's VQ-VAE and scores it). The two
passes alternate in blocks of `--block` episodes, so machine noise hits both alike. Printed: the mean episode
wall time each way, their ratio, where the extra time went (the policy wait, which holds the depth scoring,
and the observed steps, which hold the depth rendering), and whether every episode ended with the same
outcome and step count both ways.

    python benchmarks/depth_metrics_overhead.py [--policy qdepth] [--checkpoint FOLDER] [--vqvae FOLDER]
        [--episodes 4] [--block 2] [--max-steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

from qdepth_bench.eval.engine import EngineOptions
from qdepth_bench.eval.evaluate import evaluate
from qdepth_bench.eval.plan import Selection
from qdepth_bench.registry.policies import make_policy
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.results.store import Store

SEED1 = "qdepth_bench/content/policies/checkpoints/qdepth-tiny-libero-object-seed1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--policy", default="qdepth")
    parser.add_argument("--checkpoint", default=SEED1)
    parser.add_argument("--vqvae", type=Path, default=None)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--block", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args()

    spec = suite_registry().suites[args.suite]
    if args.max_steps:
        spec = spec.with_overrides({"max_steps": args.max_steps})
    policy = make_policy(args.policy, {"checkpoint": args.checkpoint} if args.checkpoint else {})
    plain = EngineOptions(workers=1)
    scored = dataclasses.replace(plain, depth_metrics=True)
    if policy.depth_output() == "tokens":
        scored.depth_codec = policy.depth_codec(args.vqvae)
    rows: dict[str, list[dict]] = {"plain": [], "depth": []}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {name: Store(Path(tmp) / f"{name}.sqlite") for name in rows}
        for start in range(0, args.episodes, args.block):
            count = min(args.block, args.episodes - start)
            for name, options in (("plain", plain), ("depth", scored)):
                # each block extends the run by its episodes (a resumed run skips those already recorded)
                selection = Selection((args.task,), start + count)
                evaluate(stores[name], [spec], policy, selection, options, "benchmark")
        for name, store in stores.items():
            rows[name] = sorted(store.episodes_frame().to_dict("records"), key=lambda r: r["episode_index"])
    policy.close()

    def mean(name: str, key: str) -> float:
        return statistics.fmean(
            float(r[key]) if key == "wall_time_s" else json.loads(r["timing"])[key] for r in rows[name]
        )

    same = [
        (a["status"], a["steps"]) == (b["status"], b["steps"])
        for a, b in zip(rows["plain"], rows["depth"], strict=True)
    ]
    print(
        f"{args.suite} task {args.task}, {args.policy} ({args.checkpoint}), {args.episodes} episodes each way, 1 worker"
    )
    print(f"{'':>12} {'wall s/ep':>10} {'policy wait s':>14} {'observed steps s':>17}")
    for name in rows:
        print(
            f"{name:>12} {mean(name, 'wall_time_s'):>10.2f} {mean(name, 'policy_wait_s'):>14.2f} "
            f"{mean(name, 'observed_step_s'):>17.2f}"
        )
    print(f"ratio (depth / plain episode wall time): {mean('depth', 'wall_time_s') / mean('plain', 'wall_time_s'):.2f}")
    print(f"same outcome and steps both ways: {sum(same)}/{len(same)} episodes")
    accuracy = [r["depth_token_accuracy"] for r in rows["depth"] if r["depth_token_accuracy"] is not None]
    if accuracy:
        print(f"depth-token accuracy (mean over episodes): {100 * statistics.fmean(accuracy):.1f}%")


if __name__ == "__main__":
    main()

"""Co-training throughput: samples per second of one optimisation step (forward, backward, AdamW) for the
tiny and medium QDepth-VLA configurations and their pi0 twin, on synthetic batches of the real shapes
(224 px image, 20 text tokens, 8-dim state, a 4-step chunk, 256 depth codes). Variants alternate step by
step so noise hits them alike; prints medians and the cost of the depth branch.

    python benchmarks/train_throughput.py [--sizes tiny,medium] [--batch 8] [--steps 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from qdepth_bench.models.qdepth.config import build_config
from qdepth_bench.models.qdepth.model import Batch, QDepthVLA
from qdepth_bench.models.qdepth.tokenizer import HashWordTokenizer


def synthetic_batch(model: QDepthVLA, size: int) -> Batch:
    c = model.config
    tokens, mask = HashWordTokenizer(c.text.vocab_size - 3, c.max_text_tokens)(["put the bowl on the plate"] * size)
    return Batch(
        torch.rand(size, 3, 224, 224) * 2 - 1,
        torch.from_numpy(tokens),
        torch.from_numpy(mask),
        torch.randn(size, c.state_dim),
        torch.rand(size, c.chunk_size, c.action_dim) * 2 - 1,
        torch.randint(0, c.codebook_size, (size, c.num_image_tokens)),
        torch.rand(size, 224, 224),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,medium")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, median of {args.steps} steps")
    for size in args.sizes.split(","):
        setups = {}
        for variant in ("qdepth", "pi0"):
            torch.manual_seed(0)
            model = QDepthVLA(build_config(size, variant))
            setups[variant] = (
                model,
                torch.optim.AdamW(model.parameters(), lr=1e-4),
                synthetic_batch(model, args.batch),
            )
        times: dict[str, list[float]] = {v: [] for v in setups}
        for step in range(args.steps + 1):  # the first step warms up
            for variant, (model, optimizer, batch) in setups.items():
                start = time.perf_counter()
                model.total_loss(model.losses(batch), step).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step:
                    times[variant].append(time.perf_counter() - start)
        rates = {v: args.batch / statistics.median(t) for v, t in times.items()}
        params = {v: sum(p.numel() for p in m.parameters()) / 1e6 for v, (m, _, _) in setups.items()}
        print(
            f"{size:>7}: qdepth {rates['qdepth']:7.2f} samples/s ({params['qdepth']:.1f}M params) | "
            f"pi0 {rates['pi0']:7.2f} samples/s ({params['pi0']:.1f}M) | depth branch costs "
            f"{100 * (rates['pi0'] / rates['qdepth'] - 1):5.1f}% more time per sample"
        )


if __name__ == "__main__":
    main()

"""QDepth-VLA inference latency per action chunk, with and without reusing the prefix keys/values.

For each configuration (tiny and medium by default) it times `sample_actions` on one observation (224 px
image, a 20-token instruction, proprio): the 10 Euler integration steps either run only the proprio and
action tokens against the cached image/text/depth keys and values (reuse), or the whole sequence every step
(recompute). The two modes alternate, so machine noise hits both alike; it prints medians and the ratio
(target: reuse >= 3x faster on the medium configuration).

    python benchmarks/inference_latency.py [--sizes tiny,medium] [--repeats 5] [--batch 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from qdepth_bench.models.qdepth.config import build_config
from qdepth_bench.models.qdepth.model import Batch, QDepthVLA
from qdepth_bench.models.qdepth.tokenizer import HashWordTokenizer


def one_batch(model: QDepthVLA, batch_size: int) -> Batch:
    c = model.config
    tokens, mask = HashWordTokenizer(c.text.vocab_size - 3, c.max_text_tokens)(
        ["put both the alphabet soup and the tomato sauce in the basket"] * batch_size
    )
    size = c.vision.image_size
    return Batch(
        torch.rand(batch_size, 3, size, size) * 2 - 1,
        torch.from_numpy(tokens),
        torch.from_numpy(mask),
        torch.randn(batch_size, c.state_dim),
    )


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,medium")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, median of {args.repeats}")
    for size in args.sizes.split(","):
        torch.manual_seed(0)
        model = QDepthVLA(build_config(size)).eval()
        batch = one_batch(model, args.batch)
        counts = model.expert_parameter_counts()
        noise = torch.randn(args.batch, model.config.chunk_size, model.config.action_dim)
        for reuse in (True, False):  # warm-up
            model.sample_actions(batch, noise=noise, reuse_prefix=reuse)
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for reuse in (True, False):
                times[reuse].append(
                    seconds(functools.partial(model.sample_actions, batch, noise=noise, reuse_prefix=reuse))
                )
        reuse_s, recompute_s = statistics.median(times[True]), statistics.median(times[False])
        print(
            f"{size:>7}: {counts['total'] / 1e6:7.1f}M params, {model.config.num_integration_steps} steps, "
            f"chunk {model.config.chunk_size}: reuse {1000 * reuse_s:8.1f} ms/chunk, recompute "
            f"{1000 * recompute_s:8.1f} ms/chunk, {recompute_s / reuse_s:5.2f}x faster with reuse"
        )


if __name__ == "__main__":
    main()

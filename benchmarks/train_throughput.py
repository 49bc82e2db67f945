"""Co-training throughput through the training code path (FSDP2 sharding, global-norm clipping, AdamW):
samples per second and peak memory per rank, for one model size and precision, at each world size and
activation-checkpointing setting asked for, on synthetic batches of the real shapes (224 px image, 20 text
tokens, 8-dim state, a 4-step chunk, 256 depth codes).

What it compares: each rank trains `--batch` samples per step (the per-rank micro-batch, no accumulation),
so a step of W ranks trains W x batch samples; samples/s counts all ranks. Ranks are processes on this
machine (gloo on CPUs, NCCL on GPUs, one GPU each); on CPUs the cores are split between the ranks. Peak
memory is, per rank, the allocator's peak on a GPU, the process's peak resident memory on a CPU (Python,
torch and the libraries included: compare the rows, not the absolute figure with the model's size).

    python benchmarks/train_throughput.py --size tiny --worlds 1,2 [--precision fp32|bf16]
        [--checkpointing off,on] [--batch 4] [--steps 4] [--variant qdepth] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from qdepth_bench.models.qdepth.config import build_config
from qdepth_bench.models.qdepth.model import Batch, QDepthVLA
from qdepth_bench.models.qdepth.tokenizer import HashWordTokenizer
from qdepth_bench.train.distributed import clip_global_norm, shard_model


def synthetic_batch(model: QDepthVLA, size: int, device: torch.device, dtype: torch.dtype) -> Batch:
    c = model.config
    tokens, mask = HashWordTokenizer(c.text.vocab_size - 3, c.max_text_tokens)(["put the bowl on the plate"] * size)
    return Batch(
        (torch.rand(size, 3, 224, 224) * 2 - 1).to(device, dtype),
        torch.from_numpy(tokens).to(device),
        torch.from_numpy(mask).to(device),
        torch.randn(size, c.state_dim).to(device, dtype),
        (torch.rand(size, c.chunk_size, c.action_dim) * 2 - 1).to(device, dtype),
        torch.randint(0, c.codebook_size, (size, c.num_image_tokens)).to(device),
        torch.rand(size, 224, 224).to(device, dtype),
    )


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, checkpointing: bool, results) -> None:
    cuda = torch.cuda.is_available()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device(f"cuda:{rank}" if cuda else "cpu")
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    torch.manual_seed(0)
    model = QDepthVLA(build_config(args.size, args.variant)).to(device)
    shard_model(model, args.precision, checkpointing)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    batch = synthetic_batch(model, args.batch, device, dtype)
    times = []
    for step in range(args.steps + 1):  # the first step warms up
        dist.barrier()
        start = time.perf_counter()
        model.total_loss(model(batch), step).backward()
        clip_global_norm(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        dist.barrier()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results.put((rank, statistics.median(times[1:]), peak, sum(p.numel() for p in model.parameters())))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", help="tiny, medium or full")
    parser.add_argument("--variant", default="qdepth")
    parser.add_argument("--worlds", default="1,2", help="numbers of ranks to run, e.g. 1,2 (GPUs: at most the GPUs)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--checkpointing", default="off", help="off, on, or off,on")
    parser.add_argument("--batch", type=int, default=4, help="samples per rank per step")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per rank (0: the cores split evenly)")
    args = parser.parse_args()
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(
        f"torch {torch.__version__}, {where}; {args.size} {args.variant}, {args.precision}, "
        f"{args.batch} samples per rank per step, median of {args.steps} steps after one warm-up"
    )
    context = mp.get_context("spawn")
    for checkpointing in [c == "on" for c in args.checkpointing.split(",")]:
        for world in [int(w) for w in args.worlds.split(",")]:
            results = context.SimpleQueue()
            mp.start_processes(
                _rank, (world, _free_port(), args, checkpointing, results), nprocs=world, start_method="spawn"
            )
            rows = sorted(results.get() for _ in range(world))
            step_s = max(r[1] for r in rows)
            peaks = ", ".join(f"{r[2] / 2**30:.2f}" for r in rows)
            print(
                f"world {world}, activation checkpointing {'on ' if checkpointing else 'off'}: "
                f"{world * args.batch / step_s:8.2f} samples/s ({step_s:.3f} s/step), peak memory per rank "
                f"[{peaks}] GiB, {rows[0][3] / 1e6:.1f}M parameters"
            )


if __name__ == "__main__":
    main()

"""Pieces every training run shares: the learning-rate schedule, the CSV/JSON log, progress, and the
distributed setup (one process on a CPU; `torchrun` with more)."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def warmup_cosine(step: int, warmup: int, cycle: int) -> float:
    """Multiplier of the base lr: linear warm-up over `warmup` steps, then cosine decay over `cycle` steps
    (the paper: 200 and 10^7, i.e. effectively constant after warm-up)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(cycle, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class MetricsLog:
    """Appends one row per logged step to `<out>/log.csv` and keeps the last row in `<out>/metrics.json`."""

    def __init__(self, out: Path, fields: list[str]) -> None:
        self.path, self.fields = out / "log.csv", fields
        self.summary = out / "metrics.json"
        out.mkdir(parents=True, exist_ok=True)

    def drop_from(self, step: int) -> None:
        """Forget rows of `step` and later (a resumed run logs them again)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) < step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.summary.write_text(json.dumps(row, indent=2))


@dataclass
class Distributed:
    """This process's place in a torchrun job (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_setup() -> Distributed:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs); a lone process is world 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Distributed(rank, world, torch.device(f"cuda:{local}" if cuda else "cpu"))


def wrap_for_training(model: torch.nn.Module, dist_info: Distributed) -> torch.nn.Module:
    """FSDP (sharding each Gemma layer) on GPUs, DDP on CPUs, the model itself in one process."""
    if dist_info.world == 1:
        return model
    if dist_info.device.type == "cuda":
        import functools

        from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
        from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer

        policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={GemmaDecoderLayer})
        return FullyShardedDataParallel(
            model,
            auto_wrap_policy=policy,
            device_id=dist_info.device,
            mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32),
            use_orig_params=True,
        )
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, find_unused_parameters=True)


def full_state_dict(wrapped: torch.nn.Module, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on every rank's CPU (gathered from FSDP shards when sharded)."""
    if type(wrapped).__name__ == "FullyShardedDataParallel":
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        config = FullStateDictConfig(offload_to_cpu=True, rank0_only=False)
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, config):
            return wrapped.state_dict()
    return model.state_dict()

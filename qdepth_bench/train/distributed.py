"""One training code path for any number of processes: a process group always exists (torchrun's, or a
one-process group made here), and the model is always sharded with FSDP2 (`fully_shard`), which on one
process shards nothing and costs a copy per layer. Each process is a rank; together they train one model.

Units of sharding are modules whose `forward` runs: each SigLIP encoder layer, the token embedding, each
joint layer of the mixture of transformers (all experts' layer i), and the model itself for what is left
(projector, expert inputs and heads, norms). A unit's weights are gathered just before it runs and freed
after, so a rank holds its 1/N shard of everything plus one unit at a time in full.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from qdepth_bench.models.qdepth.model import QDepthVLA
from qdepth_bench.models.qdepth.mot import JointLayer


@dataclass
class Distributed:
    """This process's place in the job."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # made here (destroyed at the end) rather than joined

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()


def distributed_setup() -> Distributed:
    """Join the group torchrun describes (NCCL on GPUs, gloo on CPUs), the one already made by the caller,
    or make a one-process group: a lone process (one GPU without torchrun) runs the same code."""
    cuda = torch.cuda.is_available()
    if dist.is_initialized():
        rank, world, owns = dist.get_rank(), dist.get_world_size(), False
        local = int(os.environ.get("LOCAL_RANK", rank))
    elif "MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world, owns = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), True
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
    else:
        rank, world, owns, local = 0, 1, True, 0
        dist.init_process_group("nccl" if cuda else "gloo", store=dist.HashStore(), rank=0, world_size=1)
    return Distributed(rank, world, torch.device(f"cuda:{local}" if cuda else "cpu"), owns)


def distributed_teardown(info: Distributed) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard_model(model: QDepthVLA, precision: str, checkpointing: bool) -> None:
    """Shard `model` in place over the default group (see the module docstring for the units). `precision`
    bf16: weights are gathered and used in bf16, gradients reduced in fp32 into fp32 shards (the AdamW state
    stays fp32). `checkpointing`: each joint layer recomputes its activations in the backward pass."""
    from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    model.mot.set_checkpointing(checkpointing)
    units: list[nn.Module] = [m for m in model.vision.modules() if isinstance(m, SiglipEncoderLayer)]
    units += [model.embed_tokens, *(cast(JointLayer, layer) for layer in model.mot.layers)]
    for unit in units:
        fully_shard(unit, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def set_gradient_sync(model: nn.Module, on: bool) -> None:
    """Whether the next backward pass reduces gradients over the ranks: off on all micro-steps but the last
    of an optimisation step, whose reduction then carries the accumulated gradients."""
    cast(FSDPModule, model).set_requires_gradient_sync(on)


def clip_global_norm(parameters: list[nn.Parameter], max_norm: float) -> float:
    """Clip all gradients by their norm over every rank's shards (not each shard's own); returns that norm."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return float(total)


def mean_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """The mean of each value over the ranks (losses of the rows each rank trained on)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def full_weights(model: nn.Module, main: bool) -> dict[str, torch.Tensor]:
    """The whole model's weights (policy names, fp32, CPU) on the main rank, gathered one tensor at a time;
    an empty dict on the others (which must call this too: gathering is collective)."""
    full: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        tensor: Any = value.full_tensor() if isinstance(value, DTensor) else value
        if main:
            full[name] = tensor.detach().cpu().clone()
    return full

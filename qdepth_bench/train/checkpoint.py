"""Training checkpoints, sharded: every rank writes its own shards of the weights and AdamW state in
parallel (`torch.distributed.checkpoint`), plus its random state; the main rank adds the step, scheduler and
run settings (`trainer.json`, written last: a folder without it is unfinished).

Atomic: a checkpoint is written as `<out>/checkpoint.partial` and swapped in by renames, so a process killed
at any moment leaves the previous checkpoint (or the new one) complete. It loads on any number of ranks
(the shards are re-cut to the new world size); on the same world size the random states come back too, so
the resumed run is the uninterrupted one bit for bit.

The policy folder (`<out>/policy`: model.safetensors, config.json, norm_stats.json, tokenizer) is a separate,
consolidated export of the weights, made at the end of a training or on request (`export_policy`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from qdepth_bench.train.distributed import Distributed

CHECKPOINT, META, SCHEDULER, POLICY = "checkpoint", "trainer.json", "scheduler.pt", "policy"


def _rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


def _random_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def swap_in(partial: Path, final: Path) -> None:
    """Replace `final` by the finished `partial` with renames only (see `last_checkpoint` for a stop
    between the two)."""
    previous = final.with_name(final.name + ".previous")
    if final.exists():
        final.rename(previous)
    partial.rename(final)
    if previous.exists():
        shutil.rmtree(previous)


def save_training_state(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    meta: dict[str, Any],
    info: Distributed,
) -> None:
    """Write the checkpoint of every rank (all ranks call this)."""
    partial = out / (CHECKPOINT + ".partial")
    if info.main:
        if partial.exists():
            shutil.rmtree(partial)  # a checkpoint a kill interrupted
        partial.mkdir(parents=True)
    info.barrier()
    state = {"model": model.state_dict(), "optimizer": get_optimizer_state_dict(model, optimizer)}
    try:
        dcp.save(state, checkpoint_id=partial)
    except CheckpointException as error:
        # a Ctrl-C or SIGTERM during the write: the CLI's interrupted exit, the last checkpoint left whole
        if any(isinstance(failure, KeyboardInterrupt) for failure, _ in error.failures.values()):
            raise KeyboardInterrupt from error
        raise
    torch.save(_random_state(), partial / _rng_file(info.rank))
    info.barrier()
    if info.main:
        torch.save(scheduler.state_dict(), partial / SCHEDULER)
        (partial / META).write_text(json.dumps(meta, indent=2, default=str))
        swap_in(partial, out / CHECKPOINT)
    info.barrier()


def load_training_state(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    info: Distributed,
) -> dict[str, Any]:
    """Load a checkpoint written on any world size into the sharded model and optimizer; returns its
    `trainer.json`. Random states are restored only on the world size that wrote them."""
    optimizer_state = get_optimizer_state_dict(model, optimizer)
    # weights that never had a gradient (e.g. the VLM's last-layer outputs, which no loss reads) have no AdamW
    # state in the checkpoint: they get none here either, as in the run that wrote it
    stored = dcp.FileSystemReader(folder).read_metadata().state_dict_metadata
    prefixes = {key.rsplit(".", 1)[0] for key in stored if key.startswith("optimizer.state.")}
    per_weight = cast(dict[str, Any], optimizer_state["state"])
    optimizer_state["state"] = {name: v for name, v in per_weight.items() if f"optimizer.state.{name}" in prefixes}
    state = {"model": model.state_dict(), "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=folder)
    model.load_state_dict(state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(strict=False))
    scheduler.load_state_dict(torch.load(folder / SCHEDULER, weights_only=False))
    meta = json.loads((folder / META).read_text())
    if meta.get("world") == info.world:
        random = torch.load(folder / _rng_file(info.rank), weights_only=False)
        torch.set_rng_state(random["cpu"])
        if "cuda" in random and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(random["cuda"])
    return meta


def checkpoint_meta(out: Path) -> dict[str, Any] | None:
    """`trainer.json` of the last complete checkpoint in `out` (None: there is none)."""
    folder = last_checkpoint(out)
    return None if folder is None else json.loads((folder / META).read_text())


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint of a training in `out`, also when the process stopped between
    swapping the old one out and the new one in."""
    final, previous = out / CHECKPOINT, out / (CHECKPOINT + ".previous")
    if not final.exists() and previous.exists():
        previous.rename(final)
    return final if (final / META).is_file() else None

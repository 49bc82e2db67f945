"""`qdepth-bench train policy --recipe <name>`: co-training of QDepth-VLA (paper 3.4).

Total loss = flow matching + lambda_t * depth loss, lambda_t = lambda_0 * gamma^t; AdamW with the paper's
lr, linear warm-up then cosine; gradient accumulation up to the global batch; a checkpoint every
`checkpoint_every` steps and at the end (weights, optimizer, step and random state, so `--resume` continues
exactly as an uninterrupted run would, bit for bit on one machine);
one log row per `log_every` steps in `<out>/log.csv`. Under torchrun the model is sharded with FSDP on GPUs
(DDP on CPUs) and each process draws its own samples.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.models.qdepth.checkpoint import (
    NormStats,
    load_checkpoint,
    make_tokenizer,
    model_with_backbone,
    save_checkpoint,
)
from qdepth_bench.models.qdepth.config import build_config
from qdepth_bench.models.qdepth.depth_head import DepthTokenHead
from qdepth_bench.models.qdepth.model import QDepthVLA
from qdepth_bench.train.data import make_train_loader, open_training_data
from qdepth_bench.train.loop import MetricsLog, distributed_setup, full_state_dict, warmup_cosine, wrap_for_training
from qdepth_bench.train.recipe import Recipe
from qdepth_bench.train.vqvae import load_vqvae

FIELDS = [
    "step",
    "lr",
    "total",
    "flow",
    "depth",
    "depth_weight",
    "grad_norm",
    "samples_per_s",
    "data_wait",
    "epoch",
    "elapsed_s",
]
CHECKPOINT, TRAINER_STATE = "checkpoint", "trainer_state.pt"


def _build_model(recipe: Recipe, state_dim: int, action_dim: int) -> tuple[QDepthVLA, str]:
    variant = recipe.model.get("variant", "qdepth")
    overrides = {**recipe.model.get("overrides", {}), "state_dim": state_dim, "action_dim": action_dim}
    try:
        if recipe.backbone:
            model = model_with_backbone(Path(recipe.backbone), variant, **overrides)
        else:
            model = QDepthVLA(build_config(recipe.model.get("size", "tiny"), variant, **overrides))
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"recipe {recipe.name}: bad model settings ({exc}).") from None
    if model.config.has_depth and model.config.depth_target == "tokens":
        if not recipe.vqvae:
            raise UserError(
                f"recipe {recipe.name}: variant {variant} predicts depth tokens; set `vqvae:` to a "
                "trained VQ-VAE folder."
            )
        vqvae, _ = load_vqvae(Path(recipe.vqvae))
        if not isinstance(model.depth_head, DepthTokenHead):
            raise UserError(f"recipe {recipe.name}: variant {variant} has no depth-token head to load a codebook into.")
        model.depth_head.set_codebook(vqvae.codebook.detach())
    return model, variant


def train_policy(recipe: Recipe, resume: bool = False, on_log: Callable[[dict], None] | None = None) -> Path:
    """Run (or resume) a co-training recipe; returns the checkpoint folder."""
    dist_info = distributed_setup()
    settings = recipe.train
    torch.manual_seed(settings.seed)
    data = open_training_data(recipe)
    fingerprint = data.fingerprint
    state_dim, action_dim = data.dims
    checkpoint_dir = recipe.out / CHECKPOINT
    start_step, earlier_s = 0, 0.0  # earlier_s: step time of the checkpointed steps, so a resumed log keeps counting
    if resume and last_checkpoint(recipe.out) is not None:
        loaded = load_checkpoint(checkpoint_dir)
        recorded = json.loads((checkpoint_dir / "config.json").read_text()).get("data_hash")
        if recorded not in (None, fingerprint):
            raise UserError(
                f"the data of {recipe.name} changed since {recipe.out} was checkpointed (data {recorded}, now "
                f"{fingerprint}); restore that data, or delete {recipe.out} to train from the start."
            )
        model, variant, stats = loaded.model.train(), loaded.variant, loaded.stats
        trainer_state = torch.load(checkpoint_dir / TRAINER_STATE, weights_only=False)
        start_step = trainer_state["step"]
        earlier_s = trainer_state.get("elapsed_s", 0.0)
        if "rng" in trainer_state:  # the flow noise and times continue as if never interrupted
            torch.set_rng_state(trainer_state["rng"])
    else:
        if resume:
            raise UserError(f"nothing to resume in {recipe.out}; run without --resume to start.")
        model, variant = _build_model(recipe, state_dim, action_dim)
        stats, trainer_state = data.stats[0], None
    tokenizer = make_tokenizer(model.config, Path(recipe.backbone) if recipe.backbone else None)
    position = None if trainer_state is None else trainer_state.get("data_position")
    loader = make_train_loader(
        recipe,
        data,
        model.config,
        tokenizer,
        dist_info.rank,
        dist_info.world,
        position=position,
        device=dist_info.device,
    )
    model.to(dist_info.device)
    wrapped = wrap_for_training(model, dist_info)
    optimizer = torch.optim.AdamW(
        [p for p in wrapped.parameters() if p.requires_grad], lr=settings.lr, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, settings.warmup_steps, settings.cosine_cycle)
    )
    if trainer_state is not None:
        optimizer.load_state_dict(trainer_state["optimizer"])
        scheduler.load_state_dict(trainer_state["scheduler"])
    log = MetricsLog(recipe.out, FIELDS) if dist_info.main else None
    if log is not None:
        log.drop_from(start_step)  # rows logged after the last checkpoint are run again
    accumulation, started, logged_s = settings.accumulation, time.perf_counter(), 0.0
    for step in range(start_step, settings.steps):
        sums = {"total": 0.0, "flow": 0.0, "depth": 0.0}
        for _ in range(accumulation):
            losses = wrapped(loader.next())
            total = model.total_loss(losses, step)
            (total / accumulation).backward()
            sums["total"] += float(total.detach()) / accumulation
            for key in ("flow", "depth"):
                if key in losses:
                    sums[key] += float(losses[key].detach()) / accumulation
        grad_norm = torch.nn.utils.clip_grad_norm_(wrapped.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        elapsed = time.perf_counter() - started
        if log is not None and (step % settings.log_every == 0 or done == settings.steps):
            row = {
                "step": step,
                "lr": scheduler.get_last_lr()[0],
                **{k: round(v, 6) for k, v in sums.items()},
                "depth_weight": model.depth_weight(step) if model.config.has_depth else 0.0,
                "grad_norm": round(float(grad_norm), 4),
                "samples_per_s": round(
                    (done - start_step) * settings.batch_size * accumulation * dist_info.world / elapsed, 3
                ),
                "data_wait": round(loader.take_wait() / max(elapsed - logged_s, 1e-9), 4),
                "epoch": loader.epoch,
                "elapsed_s": round(earlier_s + elapsed, 2),
            }
            logged_s = elapsed
            log.write(row)
            if on_log is not None:
                on_log(row)
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            _save(
                recipe,
                wrapped,
                model,
                stats,
                variant,
                tokenizer,
                optimizer,
                scheduler,
                done,
                dist_info.main,
                data.describe(),
                earlier_s + elapsed,
                loader.position(),
            )
    loader.close()
    return checkpoint_dir


def _save(
    recipe: Recipe,
    wrapped,
    model: QDepthVLA,
    stats: NormStats,
    variant: str,
    tokenizer: Any,
    optimizer,
    scheduler,
    step: int,
    main: bool,
    data_record: dict[str, Any],
    elapsed_s: float,
    data_position: dict[str, int],
) -> None:
    """Checkpoint (policy-loadable, with the trainer state inside): written under a temporary name, then
    swapped in by renames, so a stop at any moment leaves one complete checkpoint (see `last_checkpoint`)."""
    state = full_state_dict(wrapped, model)
    if not main:
        return
    partial = recipe.out / (CHECKPOINT + ".partial")
    weights = {k.removeprefix("module.").removeprefix("_fsdp_wrapped_module."): v for k, v in state.items()}
    save_checkpoint(
        partial,
        model.config,
        weights,
        stats,
        variant,
        tokenizer,
        extra={"recipe": recipe.source, "step": step, "data_hash": data_record["fingerprint"], "data": data_record},
    )
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "elapsed_s": elapsed_s,
            "data_position": data_position,
        },
        partial / TRAINER_STATE,
    )
    final, previous = recipe.out / CHECKPOINT, recipe.out / (CHECKPOINT + ".previous")
    if final.exists():
        final.rename(previous)
    partial.rename(final)  # from here the new checkpoint is the one a resume finds
    if previous.exists():
        shutil.rmtree(previous)
    (recipe.out / "recipe.json").write_text(json.dumps(recipe.source, indent=2, default=str))


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint of a training in `out` (weights and trainer state written together),
    also when the process stopped between swapping the old one out and the new one in."""
    final, previous = out / CHECKPOINT, out / (CHECKPOINT + ".previous")
    if not final.exists() and previous.exists():
        previous.rename(final)
    return final if (final / TRAINER_STATE).is_file() else None

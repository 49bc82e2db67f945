"""`qdepth-bench train policy --recipe <name>`: co-training of QDepth-VLA (paper 3.4).

Total loss = flow matching + lambda_t * depth loss, lambda_t = lambda_0 * gamma^t; AdamW with the paper's
lr, linear warm-up then cosine; `global_batch` samples per optimisation step over all processes, as
`batch_size` per process and micro-step times the micro-steps that make it up (gradients are reduced once,
after the last micro-step); gradients clipped by their global norm; a sharded checkpoint every
`checkpoint_every` steps and at the end (`train.checkpoint`: `--resume` continues as an uninterrupted run
would, bit for bit on one machine and world size, and on another world size too); the policy folder
(`<out>/policy`) exported at the end; one log row per `log_every` steps in `<out>/log.csv`.

One process or many (torchrun) run the same code: the model is sharded with FSDP2 (`train.distributed`),
and each rank trains on its own rows of every global batch (`train.draws`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.lineage import LINEAGE_KEY
from qdepth_bench.models.qdepth.checkpoint import (
    config_from_paligemma,
    make_tokenizer,
    model_with_backbone,
    save_checkpoint,
)
from qdepth_bench.models.qdepth.config import build_config
from qdepth_bench.models.qdepth.depth_head import DepthTokenHead
from qdepth_bench.models.qdepth.model import Batch, QDepthVLA
from qdepth_bench.train.checkpoint import (
    CHECKPOINT,
    POLICY,
    last_checkpoint,
    load_training_state,
    save_training_state,
    swap_in,
)
from qdepth_bench.train.data import make_train_loader, open_training_data
from qdepth_bench.train.distributed import (
    Distributed,
    clip_global_norm,
    distributed_setup,
    distributed_teardown,
    full_weights,
    mean_over_ranks,
    set_gradient_sync,
    shard_model,
)
from qdepth_bench.train.draws import flow_draws, rank_rows
from qdepth_bench.train.loop import MetricsLog, warmup_cosine
from qdepth_bench.train.recipe import Recipe
from qdepth_bench.train.stages import init_source, load_init_weights, resolve_length, stage_lineage
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


def _build_model(
    recipe: Recipe, state_dim: int, action_dim: int, init: Path | None
) -> tuple[QDepthVLA, str, dict | None]:
    """The recipe's model: from scratch (with its backbone's pretrained weights), or with the weights of the
    policy in `init` (`train.stages`: then the backbone folder gives only the configuration and tokenizer).
    Its depth-token head scores against the recipe's own VQ-VAE codebook either way. Also what the lineage
    records of `init`."""
    variant = recipe.model.get("variant", "qdepth")
    overrides = {**recipe.model.get("overrides", {}), "action_dim": action_dim}
    # a wider state than the data's is zero-padded (stages on datasets of other state widths share a model)
    if int(overrides.get("state_dim", state_dim)) < state_dim:
        raise UserError(
            f"recipe {recipe.name}: model.overrides.state_dim {overrides['state_dim']} is narrower than the data's "
            f"{state_dim}-dim state; raise it or drop it."
        )
    overrides["state_dim"] = int(overrides.get("state_dim", state_dim))
    try:
        if recipe.backbone and init is None:
            model = model_with_backbone(Path(recipe.backbone), variant, **overrides)
        elif recipe.backbone:
            model = QDepthVLA(config_from_paligemma(Path(recipe.backbone), variant, **overrides))
        else:
            model = QDepthVLA(build_config(recipe.model.get("size", "tiny"), variant, **overrides))
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"recipe {recipe.name}: bad model settings ({exc}).") from None
    source = None if init is None else load_init_weights(model, model.config.to_dict(), init, recipe)
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
    return model, variant, source


def train_policy(
    recipe: Recipe,
    resume: bool = False,
    on_log: Callable[[dict], None] | None = None,
    export_only: bool = False,
    on_start: Callable[[int, int], None] | None = None,
) -> Path:
    """Run (or resume) a co-training recipe on this process's rank; returns the exported policy folder.
    `export_only`: export the policy folder from the last checkpoint, training nothing. `on_start(step,
    steps)`: called once the length is known (an `epochs` recipe's steps need its data opened)."""
    info = distributed_setup()
    try:
        return _train(recipe, resume or export_only, on_log, info, export_only, on_start)
    finally:
        distributed_teardown(info)


def _to(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """The batch on `device`, its floating-point inputs in the compute dtype."""

    def move(value: Any) -> Any:
        if not torch.is_tensor(value):
            return value
        return value.to(device, dtype) if value.is_floating_point() else value.to(device)

    return Batch(**{k: move(v) for k, v in vars(batch).items()})


def _train(
    recipe: Recipe,
    resume: bool,
    on_log: Callable[[dict], None] | None,
    info: Distributed,
    export_only: bool,
    on_start: Callable[[int, int], None] | None,
) -> Path:
    accumulation = recipe.train.accumulation(info.world)
    torch.manual_seed(recipe.train.seed)  # the initial weights: the same on every rank
    data = open_training_data(recipe)
    fingerprint = data.fingerprint
    recipe, schedule = resolve_length(recipe, data, recipe.train.batch_size * info.world * accumulation)
    settings = recipe.train
    state_dim, action_dim = data.dims
    if info.main:
        last_checkpoint(recipe.out)  # finishes a swap a stop interrupted, before any rank looks
    info.barrier()
    folder = last_checkpoint(recipe.out) if resume else None
    if resume and folder is None:
        what = "export" if export_only else "resume"
        raise UserError(f"nothing to {what} in {recipe.out}; train it first (without --resume / --export).")
    # a stage's source weights count only at its start: a resumed stage has its own in the checkpoint
    model, variant, source = _build_model(
        recipe, state_dim, action_dim, init_source(recipe) if folder is None else None
    )
    lineage = stage_lineage(recipe, fingerprint, schedule, source)
    stats = data.stats[0]
    tokenizer = make_tokenizer(model.config, Path(recipe.backbone) if recipe.backbone else None)
    model.to(info.device)
    shard_model(model, settings.precision, settings.activation_checkpointing)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, settings.warmup_steps, settings.cosine_cycle)
    )
    global_batch = settings.batch_size * info.world * accumulation
    parallel: dict[str, Any] = {
        "world": info.world,
        "device": info.device.type,
        "precision": settings.precision,
        "activation_checkpointing": settings.activation_checkpointing,
        "micro_batch": settings.batch_size,
        "accumulation": accumulation,
        "global_batch": global_batch,
        "sharding": "fsdp2",
    }
    start_step, earlier_s = 0, 0.0  # earlier_s: step time of the checkpointed steps, so a resumed log keeps counting
    position = None  # where the data stream stood at the checkpoint
    if folder is not None:
        meta = load_training_state(folder, model, optimizer, scheduler, info)
        if meta.get("data_hash") not in (None, fingerprint):
            raise UserError(
                f"the data of {recipe.name} changed since {recipe.out} was checkpointed (data {meta['data_hash']}, "
                f"now {fingerprint}); restore that data, or delete {recipe.out} to train from the start."
            )
        start_step, earlier_s = meta["step"], meta.get("elapsed_s", 0.0)
        position = meta.get("data_position")
        lineage = stage_lineage(recipe, fingerprint, schedule, None, meta.get(LINEAGE_KEY))
    loader = None
    if not export_only:
        loader = make_train_loader(
            recipe, data, model.config, tokenizer, info.rank, info.world, position=position, device=info.device
        )
    if info.main and not export_only:
        print(
            f"training {recipe.name} on {info.world} process(es) ({info.device.type}, {settings.precision}): "
            f"global batch {global_batch} = micro-batch {settings.batch_size} x {info.world} "
            f"x {accumulation} accumulation step(s); {settings.steps} steps"
            + (f" ({settings.epochs:g} epochs of {schedule['epoch_frames']} frames)" if settings.epochs else ""),
            file=sys.stderr,
        )
    if on_start is not None and info.main and not export_only:
        on_start(start_step, settings.steps)
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32
    log = MetricsLog(recipe.out, FIELDS) if info.main and not export_only else None
    if log is not None:
        log.drop_from(start_step)  # rows logged after the last checkpoint are run again
    started, logged_s = time.perf_counter(), 0.0
    for step in range(start_step, settings.steps if loader is not None else start_step):
        assert loader is not None
        sums = {"total": 0.0, "flow": 0.0, "depth": 0.0}
        for micro in range(accumulation):
            set_gradient_sync(model, micro == accumulation - 1)  # reduce once, after the last
            rows = rank_rows(micro, info.rank, info.world, settings.batch_size)
            batch = _to(loader.next(), info.device, dtype)  # the rows' samples (see train.data)
            noise, tau = flow_draws(model, settings.seed, step, rows)
            losses = model(batch, noise.to(info.device, dtype), tau.to(info.device))
            total = model.total_loss(losses, step)
            (total / accumulation).backward()
            sums["total"] += float(total.detach()) / accumulation
            for key in ("flow", "depth"):
                if key in losses:
                    sums[key] += float(losses[key].detach()) / accumulation
        grad_norm = clip_global_norm(parameters, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        means = dict(zip(sums, mean_over_ranks(list(sums.values()), info.device), strict=True))
        done = step + 1
        elapsed = time.perf_counter() - started
        if log is not None and (step % settings.log_every == 0 or done == settings.steps):
            row = {
                "step": step,
                "lr": scheduler.get_last_lr()[0],
                **{k: round(v, 7) for k, v in means.items()},
                "depth_weight": model.depth_weight(step) if model.config.has_depth else 0.0,
                "grad_norm": round(grad_norm, 7),
                "samples_per_s": round((done - start_step) * global_batch / elapsed, 3),
                "data_wait": round(loader.take_wait() / max(elapsed - logged_s, 1e-9), 4),
                "epoch": loader.epoch,
                "elapsed_s": round(earlier_s + elapsed, 2),
            }
            logged_s = elapsed
            log.write(row)
            if on_log is not None:
                on_log(row)
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            meta = {
                "step": done,
                "elapsed_s": earlier_s + elapsed,
                "recipe": recipe.source,
                "data_hash": fingerprint,
                "variant": variant,
                "torch": torch.__version__,
                "data_position": loader.position(),
                "schedule": schedule,
                LINEAGE_KEY: lineage,
                **parallel,
            }
            save_training_state(recipe.out, model, optimizer, scheduler, meta, info)
            if info.main:
                (recipe.out / "recipe.json").write_text(json.dumps(recipe.source, indent=2, default=str))
    if loader is not None:
        loader.close()
    policy = recipe.out / POLICY
    weights = full_weights(model, info.main)
    if info.main:
        meta = json.loads((recipe.out / CHECKPOINT / "trainer.json").read_text())
        partial = recipe.out / (POLICY + ".partial")
        if partial.exists():
            shutil.rmtree(partial)  # an export a kill interrupted
        training = {key: meta.get(key) for key in parallel}  # as the checkpoint was trained
        extra = {
            "recipe": recipe.source,
            "step": meta["step"],
            "data_hash": fingerprint,
            "data": data.describe(),
            "training": training,
            "schedule": meta.get("schedule", schedule),
            LINEAGE_KEY: meta.get(LINEAGE_KEY, lineage),
        }
        save_checkpoint(partial, model.config, weights, stats, variant, tokenizer, extra=extra)
        swap_in(partial, policy)
    info.barrier()
    return policy

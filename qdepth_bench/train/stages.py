"""Training in stages: a recipe that starts from another training's weights (`init_from`), counts its length
in epochs, and records the lineage of every stage behind its weights.

The paper trains its SIMPLER models in stages (section 4.1.1: Bridge 13 epochs from scratch, then Fractal
9 epochs from those weights). A stage recipe names its predecessor by recipe name (`init_from:
qdepth-paper-bridge`, its exported policy at the same training seed) or by folder. Only the weights carry
over: the new stage builds a fresh optimizer and schedule, starts at step 0 (so the depth weight's decay
lambda_0 * gamma^t restarts too), normalises with its own data's statistics and scores depth against its own
VQ-VAE's codebook. The weights are applied only when the stage starts; a resumed stage continues from its
own checkpoint. A source of another architecture is refused (the first differing config field is named),
as is a missing one (naming the command that makes it).

`stage_chain` lists a recipe's stages, ancestors first; `pending_stages` those a run still has to train
(an ancestor is done once its exported policy records this very recipe), so `ablation --train` trains a
variant's whole chain in order and resumes wherever it stopped. `missing_inputs` is the check before any of
that starts: every dataset, backbone folder, VQ-VAE and init folder the chain needs, one line each.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
from pathlib import Path
from typing import Any

from torch import nn

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import file_hash, stable_hash
from qdepth_bench.core.lineage import read_lineage
from qdepth_bench.core.policy import CHECKPOINT_WEIGHTS
from qdepth_bench.models.qdepth.config import build_config
from qdepth_bench.registry.content import content_dirs
from qdepth_bench.train.checkpoint import POLICY, checkpoint_meta
from qdepth_bench.train.data import TrainingData, epoch_frames
from qdepth_bench.train.recipe import Recipe, load_recipe, recipe_path

#: config fields that shape the training, not the weights: a stage may change them from its source
TRAINING_ONLY = ("depth_loss_weight", "depth_loss_decay")


def _is_policy(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / CHECKPOINT_WEIGHTS).is_file()


def recorded_recipe(recipe: Recipe) -> Any:
    """The recipe as a checkpoint records it (JSON round trip), to compare with what a folder holds."""
    return json.loads(json.dumps(recipe.source, default=str))


def init_recipe(recipe: Recipe) -> Recipe | None:
    """The recipe `init_from` names, at this recipe's training seed (None: no init_from, or a folder)."""
    if not recipe.init_from or Path(recipe.init_from).is_dir():
        return None
    try:
        recipe_path(recipe.init_from)
    except UserError:
        return None
    return load_recipe(recipe.init_from, seed=recipe.train.seed)


def _train_command(recipe: Recipe) -> str:
    seeded = f" --seed {recipe.train.seed}" if recipe.train.seed else ""
    return f"`qdepth-bench train policy --recipe {recipe.name}{seeded}`"


def init_source(recipe: Recipe) -> Path | None:
    """The exported policy folder a stage starts from (None: from scratch); one line naming the fix when it
    is missing."""
    if not recipe.init_from:
        return None
    parent = init_recipe(recipe)
    if parent is not None:
        folder = parent.out / POLICY
        if not _is_policy(folder):
            raise UserError(
                f"recipe {recipe.name} starts from recipe {parent.name} (init_from), whose policy {folder} is not "
                f"trained yet; train it first: {_train_command(parent)}."
            )
        return folder
    given = Path(recipe.init_from)
    folder = given / POLICY if _is_policy(given / POLICY) else given
    if not _is_policy(folder):
        raise UserError(
            f"recipe {recipe.name}: init_from {given} is neither a recipe name nor a folder holding a trained policy "
            "(model.safetensors + config.json, or a training's out folder with policy/); train it with "
            "`qdepth-bench train policy --recipe NAME` or fix init_from."
        )
    return folder


def stage_chain(recipe: Recipe) -> list[Recipe]:
    """The stages that make `recipe`'s weights, ancestors first, `recipe` last (init_from recipe names,
    followed back; a folder ends the chain)."""
    chain = [recipe]
    while (parent := init_recipe(chain[0])) is not None:
        if parent.out in {stage.out for stage in chain}:
            raise UserError(f"recipe {recipe.name}: init_from loops back to {parent.name}; fix init_from.")
        chain.insert(0, parent)
    return chain


def stage_done(recipe: Recipe) -> bool:
    """Whether the recipe's exported policy is there, trained by this very recipe (seed included)."""
    folder = recipe.out / POLICY
    if not _is_policy(folder):
        return False
    return json.loads((folder / "config.json").read_text()).get("recipe") == recorded_recipe(recipe)


def resume_step(recipe: Recipe) -> int | None:
    """The step an interrupted training of this recipe would continue from (None: nothing to resume).
    A folder left by another recipe is refused rather than silently continued."""
    meta = checkpoint_meta(recipe.out)
    if meta is None:
        return None
    if meta.get("recipe") != recorded_recipe(recipe):
        raise UserError(
            f"{recipe.out} holds a training of another recipe than {recipe.name} (seed {recipe.train.seed}); "
            "move it away or delete it to train from the start."
        )
    return int(meta.get("step", 0))


def pending_stages(recipe: Recipe) -> list[tuple[Recipe, int | None]]:
    """The stages of `recipe`'s chain still to train, ancestors first, each with the step its checkpoint
    continues from (None: from its start). `recipe` itself is always listed (its caller knows it is wanted)."""
    chain = stage_chain(recipe)
    return [(stage, resume_step(stage)) for stage in chain if stage is recipe or not stage_done(stage)]


def resolve_length(recipe: Recipe, data: TrainingData, global_batch: int) -> tuple[Recipe, dict[str, Any]]:
    """The recipe with `train.steps` set: an `epochs` recipe takes ceil(epochs x epoch frames / global
    batch) steps, the epoch being what the data stream deals in one pass (`train.data`: every episode of a
    dataset of weight 1, twice at weight 2, ...). Also the schedule as checkpoints record it."""
    frames = epoch_frames(data, recipe.train.seed)
    steps = recipe.train.steps or math.ceil(recipe.train.epochs * frames / global_batch)
    schedule = {
        "epochs": recipe.train.epochs or None,
        "epoch_frames": frames,
        "global_batch": global_batch,
        "steps": steps,
    }
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=steps)), schedule


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def load_init_weights(model: nn.Module, config: dict[str, Any], folder: Path, recipe: Recipe) -> dict[str, str]:
    """Load the weights of the policy in `folder` into `model` (built from `config`, not yet sharded),
    refusing a source of another architecture; returns what the lineage records of it."""
    from safetensors.torch import load_file

    theirs = _flat(json.loads((folder / "config.json").read_text()).get("model", {}))
    ours = _flat(json.loads(json.dumps(config)))  # as config.json holds it (tuples as lists)
    differs = [k for k in sorted(set(ours) | set(theirs)) if k not in TRAINING_ONLY and ours.get(k) != theirs.get(k)]
    if differs:
        key = differs[0]
        raise UserError(
            f"recipe {recipe.name}: init_from {folder} is another architecture ({key} {theirs.get(key)!r} there, "
            f"{ours.get(key)!r} here); start from a policy of the same model size, variant, overrides and "
            "state/action dims, or drop init_from."
        )
    weights = load_file(str(folder / CHECKPOINT_WEIGHTS))
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        names = (result.missing_keys or result.unexpected_keys)[:3]
        raise UserError(f"{folder / CHECKPOINT_WEIGHTS} does not fit its config.json (e.g. {', '.join(names)}).")
    return {"path": str(folder), "hash": file_hash(folder / CHECKPOINT_WEIGHTS)}


def stage_lineage(
    recipe: Recipe,
    fingerprint: str,
    schedule: dict[str, Any],
    init: dict[str, str] | None,
    resumed: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The lineage of a stage's weights: its source's (when it started from one) and this stage
    (`core.lineage` lists the fields). `resumed`: the lineage of the checkpoint a resumed stage continues,
    whose earlier stages and source stand (the source may be gone by now); this stage is described anew, as
    a resume may change its length."""
    if resumed:
        earlier, init = resumed[:-1], resumed[-1].get("init_from")
    else:
        earlier = (read_lineage(Path(init["path"])) if init else None) or []
    stage = {
        "recipe": recipe.name,
        "recipe_hash": stable_hash(recipe.source),
        "settings": {"train": dataclasses.asdict(recipe.train), "model": recipe.model},
        "data": fingerprint,
        "steps": schedule["steps"],
        "epochs": schedule["epochs"],
        "init_from": init,
    }
    return [*earlier, stage]


def _vqvae_maker(folder: str) -> str | None:
    """The content recipe that trains a VQ-VAE into `folder`, if one does."""
    for directory in content_dirs("training"):
        for path in sorted(directory.glob("*.yaml")):
            try:
                recipe = load_recipe(path)
            except UserError:
                continue
            if recipe.kind == "vqvae" and Path(recipe.out) == Path(folder):
                return recipe.name
    return None


def _scores_codes(recipe: Recipe) -> bool:
    """Whether the recipe's model predicts depth codes (and so reads its `vqvae`): a pixel variant or one
    without a depth branch inherits the key from the recipe it extends without using it."""
    try:
        config = build_config(recipe.model.get("size", "tiny"), recipe.model.get("variant", "qdepth"))
    except (KeyError, ValueError):
        return True  # a bad model is the training's to report, in its own words
    return config.has_depth and config.depth_target == "tokens"


def missing_inputs(recipes: list[Recipe]) -> list[str]:
    """What the stages of these recipes read that is not there, one line per missing input naming where to
    put it (or the command that makes it) and the stages that need it; empty when everything is in place.
    Checks paths only: nothing is opened."""
    stages = {stage.out: stage for recipe in recipes for stage in stage_chain(recipe)}
    missing: dict[str, tuple[str, list[str]]] = {}  # path -> (what to do, the stages that read it)

    def lack(path: str, fix: str, stage: Recipe) -> None:
        missing.setdefault(path, (fix, []))[1].append(stage.name)

    for recipe in stages.values():
        for entry in recipe.data.get("datasets") or [recipe.data]:
            what = entry.get("about") or recipe.data.get("about") or "the dataset"
            for pattern in entry.get("paths", []):
                if not glob.glob(str(pattern)):
                    lack(str(pattern), f"nothing there; put {what} there", recipe)
        if recipe.backbone and not (Path(recipe.backbone) / "config.json").is_file():
            fix = (
                "no PaliGemma folder; put a local copy of google/paligemma-3b-pt-224 there (config, weights, tokenizer)"
            )
            lack(recipe.backbone, fix, recipe)
        if not recipe.vqvae or not _scores_codes(recipe):
            pass
        elif recipe.vqvae in missing:
            lack(recipe.vqvae, "", recipe)
        elif not (Path(recipe.vqvae) / "model.safetensors").is_file():
            maker = _vqvae_maker(recipe.vqvae)  # reads every recipe: once per folder
            how = f"`qdepth-bench train vqvae --recipe {maker}`" if maker else "`qdepth-bench train vqvae`"
            fix = (
                f"no trained VQ-VAE; annotate the data's depth (`qdepth-bench depth annotate`), train it with {how}, "
                f"then `qdepth-bench depth encode DATA --vqvae {recipe.vqvae}`"
            )
            lack(recipe.vqvae, fix, recipe)
        if recipe.init_from and init_recipe(recipe) is None:
            given = Path(recipe.init_from)
            if not (_is_policy(given) or _is_policy(given / POLICY)):
                lack(recipe.init_from, "no trained policy; put the policy folder to start from there", recipe)
    lines = []
    for path, (fix, readers) in missing.items():
        others = f" and {len(readers) - 1} other stage(s)" if len(readers) > 1 else ""
        lines.append(f"{path}: {fix} (read by {readers[0]}{others})")
    return lines

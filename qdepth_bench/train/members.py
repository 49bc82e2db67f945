"""Training the models of an ablation: each (variant, training seed) from its variant's recipe, into the
checkpoint folder the ablation names.

Training runs in the recipe's `out` folder (resumed from its last checkpoint when one is there, so a stopped
machine loses at most `checkpoint_every` steps) and the exported policy folder is copied into the ablation's
folder under a temporary name, then renamed: a checkpoint folder either holds a finished training or is
absent, which is how the ablation tells trained from untrained.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.ablations import Member
from qdepth_bench.registry.policies import policy_registry
from qdepth_bench.train.checkpoint import checkpoint_meta
from qdepth_bench.train.policy import train_policy
from qdepth_bench.train.recipe import Recipe, load_recipe


def member_recipe(member: Member) -> Recipe:
    """The variant's recipe at the member's training seed."""
    if not member.variant.recipe:
        raise UserError(
            f"{member.name} has no trained checkpoint at {member.checkpoint} and its ablation names no `recipe` "
            "to train it with; add one to the variant or train it yourself into that folder."
        )
    recipe = load_recipe(member.variant.recipe, seed=member.seed)
    expected = policy_registry().get(member.variant.policy).options.get("variant")
    trains = recipe.model.get("variant", "qdepth")
    if expected and trains != expected:
        raise UserError(
            f"recipe {recipe.name} trains a '{trains}' model but policy {member.variant.policy} loads "
            f"'{expected}' ones; fix the variant's recipe in its ablation."
        )
    return recipe


def resume_step(recipe: Recipe) -> int | None:
    """The step an interrupted training of this recipe would continue from (None: nothing to resume).
    A folder left by another recipe is refused rather than silently continued."""
    meta = checkpoint_meta(recipe.out)
    if meta is None:
        return None
    if meta.get("recipe") != json.loads(json.dumps(recipe.source, default=str)):
        raise UserError(
            f"{recipe.out} holds a training of another recipe than {recipe.name} (seed {recipe.train.seed}); "
            "move it away or delete it to train from the start."
        )
    return int(meta.get("step", 0))


def train_member(
    member: Member, recipe: Recipe, resume: bool, on_log: Callable[[dict[str, Any]], None] | None = None
) -> Path:
    """Train (or finish training) one member from its `member_recipe`, continuing when `resume` (its
    `resume_step` found a checkpoint), and install the checkpoint; returns the installed folder."""
    if member.checkpoint is None:
        raise UserError(f"{member.name} names no checkpoint folder to train into.")
    trained = train_policy(recipe, resume, on_log)
    partial = member.checkpoint.with_name(member.checkpoint.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained, partial)
    partial.rename(member.checkpoint)
    return member.checkpoint

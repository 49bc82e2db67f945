"""Training the models of an ablation: each (variant, training seed) from its variant's recipe, into the
checkpoint folder the ablation names. A variant's recipe may be the last stage of a chain (`init_from`, see
`train.stages`): `ablation --train` trains its `pending_stages` in order, ancestors at the member's seed, and
installs only the last.

Training runs in the recipe's `out` folder (resumed from its last checkpoint when one is there, so a stopped
machine loses at most `checkpoint_every` steps) and the exported policy folder is copied into the ablation's
folder under a temporary name, then renamed: a checkpoint folder either holds a finished training or is
absent, which is how the ablation tells trained from untrained.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.ablations import Member
from qdepth_bench.registry.policies import policy_registry
from qdepth_bench.train.checkpoint import POLICY
from qdepth_bench.train.policy import train_policy
from qdepth_bench.train.recipe import Recipe, load_recipe
from qdepth_bench.train.stages import stage_done


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


def train_member(
    member: Member,
    recipe: Recipe,
    resume: bool,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> Path:
    """Train (or finish training) one member's last stage from its `member_recipe`, continuing when `resume`
    (`train.stages.resume_step` found a checkpoint), and install the checkpoint; returns the installed folder.
    A recipe whose policy is exported already (e.g. trained on several GPUs with `torchrun ... train policy
    --recipe R --seed N`) is installed as it is. Its earlier stages must be trained already
    (`train.stages.pending_stages` lists them)."""
    if member.checkpoint is None:
        raise UserError(f"{member.name} names no checkpoint folder to train into.")
    trained = recipe.out / POLICY if stage_done(recipe) else train_policy(recipe, resume, on_log, on_start=on_start)
    partial = member.checkpoint.with_name(member.checkpoint.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained, partial)
    partial.rename(member.checkpoint)
    return member.checkpoint

"""Training commands: `train vqvae` and `train policy`, each from a recipe (content/training/*.yaml)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from qdepth_bench.cli.common import console, train_app
from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.base import parse_key_values


def _recipe(recipe: Path, overrides: list[str] | None, kind: str, seed: int | None = None) -> Any:
    from qdepth_bench.train.recipe import load_recipe

    loaded = load_recipe(recipe, parse_key_values(overrides or []), seed=seed)
    if loaded.kind != kind:
        raise UserError(f"{recipe} is a {loaded.kind} recipe; use `qdepth-bench train {loaded.kind}`.")
    return loaded


def _print_log(row: dict[str, Any]) -> None:
    console.print("  " + "  ".join(f"{k} {v}" for k, v in row.items()), highlight=False)


def _ignore_start(step: int, steps: int) -> None:
    """Log lines need no total (a terminal's progress bar does)."""


@dataclass(frozen=True)
class TrainingHooks:
    """What a training reports to: each logged row, and its length once known (an `epochs` recipe's steps
    are known when its data is opened)."""

    on_log: Callable[[dict[str, Any]], None]
    on_start: Callable[[int, int], None]


@contextmanager
def training_progress(label: str, steps: int = 0, start: int = 0) -> Iterator[TrainingHooks]:
    """A progress bar over training steps (step, loss, ETA) on a terminal; log lines elsewhere (CI, files).
    `steps` 0: the length comes with `on_start`."""
    if not console.is_terminal:
        yield TrainingHooks(_print_log, _ignore_start)
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(label, total=steps or None, completed=start, loss="")

        def on_log(row: dict[str, Any]) -> None:
            losses = "  ".join(f"{k} {row[k]:.4g}" for k in ("total", "flow", "depth") if isinstance(row.get(k), float))
            progress.update(bar, completed=int(row["step"]) + 1, loss=losses)

        def on_start(step: int, total: int) -> None:
            progress.update(bar, total=total, completed=step)

        yield TrainingHooks(on_log, on_start)


@train_app.command("vqvae")
def train_vqvae_command(
    recipe: Annotated[Path, typer.Option(help="a recipe file, or the name of one in content/training/ (kind: vqvae)")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a recipe value: train.steps=100")] = None,
) -> None:
    """Train the depth VQ-VAE (K=256 codes of dimension 160 on a 16x16 grid) on annotated depth."""
    from qdepth_bench.train.vqvae import train_vqvae

    loaded = _recipe(recipe, set_, "vqvae")
    out = train_vqvae(loaded, _print_log)
    console.print(f"VQ-VAE written to {out}: {(out / 'evaluation.json').read_text()}", highlight=False)


@train_app.command("policy")
def train_policy_command(
    recipe: Annotated[Path, typer.Option(help="a recipe file, or the name of one in content/training/ (kind: policy)")],
    resume: Annotated[bool, typer.Option(help="continue from the recipe's last checkpoint")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a recipe value: train.steps=100")] = None,
    export: Annotated[
        bool, typer.Option(help="only write <out>/policy (the policy folder) from the last checkpoint")
    ] = False,
    seed: Annotated[
        int | None,
        typer.Option(help="a training seed other than the recipe's: trains into its out with -seedN added"),
    ] = None,
) -> None:
    """Co-train QDepth-VLA (or a variant, or pi0) from a recipe; torchrun for several processes."""
    from qdepth_bench.train.policy import train_policy

    loaded = _recipe(recipe, set_, "policy", seed)
    with training_progress(loaded.name, loaded.train.steps) as hooks:
        out = train_policy(loaded, resume, hooks.on_log, export_only=export, on_start=hooks.on_start)
    console.print(
        f"policy written to {out}; evaluate it with `qdepth-bench run SUITE --policy "
        f"{loaded.model.get('variant', 'qdepth')} --checkpoint {out}`",
        highlight=False,
    )

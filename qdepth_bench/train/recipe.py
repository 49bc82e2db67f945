"""Named training recipes (`content/training/<name>.yaml`, or any recipe file): what to train, on which
data, how long, with what.

A recipe is data, recorded with every checkpoint it produces, so a checkpoint always says how it was made.
Fields (defaults are the paper's optimisation setup, section 3.4.4):

  kind: policy | vqvae
  model: {size: tiny|medium|full, variant: qdepth|pi0|..., overrides: {field: value}}   (policy)
  backbone: PaliGemma folder for real weights (full size), else none
  data: {format: libero_hdf5|lerobot|rlds, paths: [glob...], cameras: [main], keys: {...}, layout: bridge,
         rotation: 180|0 (default: the format's), resize: bilinear|lanczos4, shuffle_buffer: 1000}
        or a mixture: {datasets: [{format, paths, weight, keys, layout, ...}, ...], shuffle_buffer: ...}
        (see docs/data.md)
  vqvae: folder of a trained depth VQ-VAE (its codebook scores the depth tokens)   (policy)
  train: {steps or epochs (one of the two, not both: epochs are turned into steps with the data stream's epoch size and
          the global batch when the data is opened, and both are recorded), batch_size (per process and
          micro-step), global_batch (over all processes), lr,
          weight_decay, warmup_steps, cosine_cycle, seed, log_every, checkpoint_every, max_grad_norm,
          precision (fp32|bf16), activation_checkpointing, workers, prefetch, streams}
  out: folder for checkpoints, logs and the recipe copy
  extends: another recipe (a name or file) this one starts from; its values are merged in underneath, so a
           variant recipe states only what differs (its model variant, name and out) and cannot drift from
           the data, steps and schedule of the recipe it extends (a `train.steps` here replaces the base's
           `train.epochs`, and the other way round)
  init_from: the weights a training stage starts from (`train.stages`): a recipe name (its exported policy,
             trained at the same seed), or a folder (an exported policy, or a training's `out`). Weights
             only: the optimizer, schedule, step and depth-weight decay start afresh, and only at step 0 (a
             resumed stage continues from its own checkpoint)

A training seed other than the recipe's own (`load_recipe(..., seed=N)`) is a recipe of its own: `train.seed`
set, and `-seedN` added to `out`, so seeds never share a folder and each checkpoint records its seed.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.base import read_yaml
from qdepth_bench.registry.content import content_dirs

PRECISIONS = ("fp32", "bf16")


#: the two units a training's length may be given in (a recipe gives one, or neither for the default steps)
LENGTH_UNITS = ("steps", "epochs")


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1000  # optimisation steps (0 in an `epochs` recipe until its data is opened: `train.stages`)
    epochs: float = 0.0  # passes over the data stream's epoch (0: the recipe counts steps)
    batch_size: int = 8  # per process and micro-step (the micro-batch)
    global_batch: int = 0  # over all processes; 0: batch_size x processes (no accumulation)
    lr: float = 5e-5
    weight_decay: float = 1e-10
    warmup_steps: int = 200
    cosine_cycle: int = 10_000_000
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    max_grad_norm: float = 1.0
    precision: str = "fp32"  # fp32, or bf16: bf16 weights and compute, fp32 master weights and reduction
    activation_checkpointing: bool = False  # recompute each joint layer's activations in the backward pass
    workers: int = 0  # DataLoader worker processes per rank (0: batches made in the training process)
    prefetch: int = 2  # batches each worker prepares ahead
    #: data streams the epoch is dealt to (0: ranks x workers). Fixed, it keeps the data order, and so the
    #: global batch of every step, the same on any ranks x workers that divides it
    streams: int = 0

    def accumulation(self, world: int) -> int:
        """Micro-steps per optimisation step on `world` processes: global_batch = batch_size x world x this."""
        per_round = self.batch_size * world
        if not self.global_batch:
            return 1
        if self.global_batch % per_round:
            raise UserError(
                f"train.global_batch {self.global_batch} must be a multiple of batch_size {self.batch_size} x "
                f"{world} processes = {per_round}; change global_batch or batch_size."
            )
        return self.global_batch // per_round


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    out: Path
    data: dict[str, Any]
    train: TrainSettings
    model: dict[str, Any] = field(default_factory=dict)
    backbone: str | None = None
    vqvae: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None

    @property
    def length(self) -> str:
        """The training's length as the recipe gives it: "13 epochs" or "3000 steps"."""
        if self.train.epochs:
            return f"{self.train.epochs:g} epochs"
        return f"{self.train.steps} steps"

    def glob_paths(self, patterns: list[str]) -> list[Path]:
        """The files or folders some data path patterns name (a pattern that matches nothing is an error)."""
        paths: list[Path] = []
        for pattern in patterns:
            matches = sorted(glob.glob(str(pattern)))
            if not matches:
                raise UserError(
                    f"recipe {self.name}: no files match data path '{pattern}'; generate or download "
                    "the data first (see docs/data.md)."
                )
            paths += [Path(m) for m in matches]
        if not paths:
            raise UserError(f"recipe {self.name}: data.paths is empty.")
        return paths

    def data_paths(self) -> list[Path]:
        """Every dataset path of the recipe: `data.paths`, or those of each `data.datasets` entry."""
        listed = self.data.get("datasets") or [self.data]
        return self.glob_paths([p for entry in listed for p in entry.get("paths", [])])


def recipe_path(recipe: Path | str) -> Path:
    """A recipe file, or the named recipe of the content folders (`qdepth-tiny-libero-object`)."""
    if Path(recipe).is_file():
        return Path(recipe)
    folders = content_dirs("training")
    named = [folder / f"{recipe}.yaml" for folder in folders if (folder / f"{recipe}.yaml").is_file()]
    if named:
        return named[-1]
    known = ", ".join(sorted({p.stem for folder in folders for p in folder.glob("*.yaml")}))
    raise UserError(f"recipe {recipe} does not exist; give a recipe file or a named recipe ({known}).")


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, merging nested mappings key by key; a length unit `over` gives (train.steps or
    train.epochs) replaces the other one of `base`."""
    merged = dict(base)
    if isinstance(over.get("train"), dict) and isinstance(base.get("train"), dict):
        given = [unit for unit in LENGTH_UNITS if unit in over["train"]]
        if given:
            merged["train"] = {k: v for k, v in base["train"].items() if k not in LENGTH_UNITS}
    for key, value in over.items():
        merged[key] = (
            _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def _read_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    data = read_yaml(path)
    if "extends" not in data:
        return data
    base_path = recipe_path(str(data.pop("extends")))
    if base_path.resolve() in seen:
        raise UserError(f"recipe {path}: `extends` loops back to {base_path}.")
    return _merged(_read_with_bases(base_path, (*seen, base_path.resolve())), data)


def _typed(key: str, value: Any) -> Any:
    """A train setting in its field's type (`--set` gives strings; "false" is not a true bool)."""
    kind = type(getattr(TrainSettings, key))
    if kind is bool and isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{key} must be true or false, not {value!r}")
        return value.lower() == "true"
    return kind(value)


def load_recipe(recipe: Path | str, overrides: dict[str, Any] | None = None, seed: int | None = None) -> Recipe:
    """Read a recipe (a file or a name, with what it extends); `overrides` are dotted keys from the command
    line (train.steps=10); `seed`, when it differs from the recipe's, makes the seeded recipe (see above)."""
    path = recipe_path(recipe)
    data = _read_with_bases(Path(path), (Path(path).resolve(),))
    own_seed = int(data.get("train", {}).get("seed", 0))
    if seed is not None and seed != own_seed:
        overrides = {**(overrides or {}), "train.seed": seed, "out": f"{data.get('out', '')}-seed{seed}"}
    for key, value in (overrides or {}).items():
        *parents, last = key.split(".")
        nested: dict[str, Any] = {last: value}
        for part in reversed(parents):
            nested = {part: nested}
        data = _merged(data, nested)
    units = [unit for unit in LENGTH_UNITS if unit in data.get("train", {})]
    if len(units) > 1:
        raise UserError(f"recipe {path}: give one of train.steps and train.epochs, not both; see docs/training.md.")
    # an `epochs` recipe's steps are 0 until its data is opened; a recipe giving neither takes the default steps
    length = {"steps": 0} if units == ["epochs"] else {}
    try:
        train = TrainSettings(**{k: _typed(k, v) for k, v in {**data.get("train", {}), **length}.items()})
    except (TypeError, AttributeError, ValueError) as exc:
        raise UserError(f"recipe {path}: bad train settings ({exc}); see docs/training.md.") from None
    if train.steps < 0 or train.epochs < 0 or not (train.steps or train.epochs):
        raise UserError(f"recipe {path}: train.{(units or ['steps'])[0]} must be positive; see docs/training.md.")
    if train.precision not in PRECISIONS:
        raise UserError(f"recipe {path}: train.precision must be fp32 or bf16 (got {train.precision!r}).")
    kind = data.get("kind", "policy")
    if kind not in ("policy", "vqvae"):
        raise UserError(f"recipe {path}: kind must be policy or vqvae (got {kind!r}).")
    if "out" not in data or "data" not in data:
        raise UserError(f"recipe {path}: needs `out` and `data` (see docs/training.md).")
    return Recipe(
        data.get("name", Path(path).stem),
        kind,
        Path(data["out"]),
        data["data"],
        train,
        data.get("model", {}),
        data.get("backbone"),
        data.get("vqvae"),
        data,
        str(data["init_from"]) if data.get("init_from") else None,
    )

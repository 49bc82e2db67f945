"""Names -> ablations: `content/ablations/<id>.yaml` declares the suite and its task columns, the
components, the full model's policy, and each variant's policy, label, removed components and (optionally)
its row in a published table.

A variant that is trained here also names how it is made: its training `recipe` and the `checkpoint` folder
(relative to the content folder holding the spec) that its seed-0 training is copied to; training seed N
lives beside it with `-seedN` added, and `seeds` says how many the ablation trains. `protocol` overrides the
suite's protocol for the ablation's runs (a miniature's `max_steps`, `stand_ins`). Such a variant's results
are its checkpoints' (matched by weights); one without a checkpoint is matched by policy name. A variant with
other options than its policy's defaults is its own policy file."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.policy import CHECKPOINT_WEIGHTS
from qdepth_bench.registry.base import Registry, read_yaml
from qdepth_bench.registry.suites import suite_trials


@dataclass(frozen=True)
class Variant:
    policy: str
    label: str
    removes: tuple[str, ...] = ()
    reference_method: str = ""
    recipe: str = ""
    checkpoint: str = ""
    seeds: int = 1


@dataclass(frozen=True)
class Member:
    """One trained model of an ablation: a variant at one training seed, and where its checkpoint lives."""

    variant: Variant
    seed: int
    checkpoint: Path | None  # None: the policy needs no trained checkpoint (or brings its own)

    @property
    def name(self) -> str:
        return f"{self.variant.policy} seed {self.seed}"

    @property
    def weights(self) -> Path | None:
        return None if self.checkpoint is None else self.checkpoint / CHECKPOINT_WEIGHTS

    @property
    def trained(self) -> bool:
        return self.weights is None or self.weights.is_file()


def seed_folder(checkpoint: Path, seed: int) -> Path:
    """Seed 0 is the recipe as written; another seed sits beside it with `-seedN` added."""
    return checkpoint if seed == 0 else checkpoint.with_name(f"{checkpoint.name}-seed{seed}")


@dataclass(frozen=True)
class AblationSpec:
    id: str
    title: str
    suite: str
    columns: dict[str, str]  # label -> task id or task name
    components: tuple[str, ...]
    full: str
    variants: tuple[Variant, ...]
    reference_table: str = ""
    root: Path | None = None  # the content folder the spec came from; checkpoints are relative to it
    episodes: int | None = None  # per task (None: the protocol's)
    #: protocol overrides the ablation's runs take (e.g. a miniature's short episodes and stand-in table); a
    #: spec with `stand_ins` also counts the episodes run with stand-in assets, which tables otherwise leave out
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def task_ids(self) -> str | None:
        """The columns as a task list for a run ("0,3"); None when they name tasks (the run covers the suite)."""
        values = list(self.columns.values())
        return ",".join(values) if all(v.isdigit() for v in values) else None

    def members(self, seeds: int | None = None) -> list[Member]:
        """Every (variant, training seed) of the ablation; `seeds` overrides each trained variant's count."""
        members = []
        for variant in self.variants:
            if not variant.checkpoint:
                members.append(Member(variant, 0, None))
                continue
            base = Path(variant.checkpoint)
            if not base.is_absolute() and self.root is not None:
                base = self.root / base
            count = variant.seeds if seeds is None else seeds
            members += [Member(variant, seed, seed_folder(base, seed)) for seed in range(count)]
        return members

    @property
    def subset(self) -> str:
        """The tasks the ablation declares, against the suite's: its cells are complete for this subset."""
        trials = suite_trials(self.suite)
        total = f" of {len(trials)}" if trials else ""
        return f"(tasks {', '.join(self.columns.values())}: {len(self.columns)}{total} tasks)"


def _spec(data: dict[str, Any], source: str, root: Path | None = None) -> AblationSpec:
    try:
        variants = tuple(
            Variant(
                v["policy"],
                v["label"],
                tuple(v.get("removes", ())),
                v.get("reference_method", ""),
                str(v.get("recipe", "")),
                str(v.get("checkpoint", "")),
                int(v.get("seeds", 1)),
            )
            for v in data["variants"]
        )
        spec = AblationSpec(
            str(data["id"]),
            str(data["title"]),
            str(data["suite"]),
            {str(k): str(v) for k, v in data["columns"].items()},
            tuple(data["components"]),
            str(data["full"]),
            variants,
            str(data.get("reference_table", "")),
            root,
            int(data["episodes"]) if data.get("episodes") is not None else None,
            dict(data.get("protocol") or {}),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UserError(f"{source}: missing or malformed field {exc}; see content/ablations/table6.yaml.") from None
    if spec.full not in {v.policy for v in spec.variants}:
        raise UserError(f"{source}: the full model '{spec.full}' must be one of its variants.")
    unknown = {c for v in variants for c in v.removes} - set(spec.components)
    if unknown:
        raise UserError(f"{source}: variants remove unknown components {sorted(unknown)}.")
    for variant in variants:
        if variant.recipe and not variant.checkpoint:
            raise UserError(f"{source}: variant {variant.policy} has a recipe but no `checkpoint` to train into.")
        if variant.seeds < 1:
            raise UserError(f"{source}: variant {variant.policy} needs seeds >= 1 (got {variant.seeds}).")
    return spec


@lru_cache(maxsize=1)
def ablation_registry() -> Registry[AblationSpec]:
    """Every ablation in the content folders, by id."""

    def parse(path: Path) -> tuple[str, AblationSpec]:
        spec = _spec(read_yaml(path), str(path), path.parent.parent)
        return spec.id, spec

    return Registry.from_content("ablation", "ablations", parse)


def ablation_spec(name: str) -> AblationSpec:
    return ablation_registry().get(name)

"""Names -> ablations: `content/ablations/<id>.yaml` declares the suite and its task columns, the
components, the full model's policy, and each variant's policy, label, removed components and (optionally)
its row in a published table. A variant with other options than its policy's defaults is its own policy
file, so results are matched by policy name alone."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.base import Registry, read_yaml
from qdepth_bench.registry.suites import suite_trials


@dataclass(frozen=True)
class Variant:
    policy: str
    label: str
    removes: tuple[str, ...] = ()
    reference_method: str = ""


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

    @property
    def subset(self) -> str:
        """The tasks the ablation declares, against the suite's: its cells are complete for this subset."""
        trials = suite_trials(self.suite)
        total = f" of {len(trials)}" if trials else ""
        return f"(tasks {', '.join(self.columns.values())}: {len(self.columns)}{total} tasks)"


def _spec(data: dict[str, Any], source: str) -> AblationSpec:
    try:
        variants = tuple(
            Variant(v["policy"], v["label"], tuple(v.get("removes", ())), v.get("reference_method", ""))
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
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{source}: missing or malformed field {exc}; see content/ablations/table6.yaml.") from None
    if spec.full not in {v.policy for v in spec.variants}:
        raise UserError(f"{source}: the full model '{spec.full}' must be one of its variants.")
    unknown = {c for v in variants for c in v.removes} - set(spec.components)
    if unknown:
        raise UserError(f"{source}: variants remove unknown components {sorted(unknown)}.")
    return spec


@lru_cache(maxsize=1)
def ablation_registry() -> Registry[AblationSpec]:
    """Every ablation in the content folders, by id."""

    def parse(path: Path) -> tuple[str, AblationSpec]:
        spec = _spec(read_yaml(path), str(path))
        return spec.id, spec

    return Registry.from_content("ablation", "ablations", parse)


def ablation_spec(name: str) -> AblationSpec:
    return ablation_registry().get(name)

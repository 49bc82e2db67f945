"""Names -> suites: suite families in `content/suites/` (protocol constants, per-suite values, groups).

A name is a suite, one of its aliases or a group of suites; unknown names fail with the closest match.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.protocol import SuiteSpec, with_grid_trials
from qdepth_bench.registry.base import read_yaml, unknown_name
from qdepth_bench.registry.content import content_dirs


@dataclass(frozen=True)
class SuiteRegistry:
    suites: dict[str, SuiteSpec]
    groups: dict[str, tuple[str, ...]]
    aliases: dict[str, str]

    def names(self) -> list[str]:
        return [*self.suites, *self.groups, *self.aliases]

    def resolve(self, name: str) -> list[SuiteSpec]:
        """A suite, alias or group name -> the suites it stands for."""
        name = self.aliases.get(name, name)
        if name in self.suites:
            return [self.suites[name]]
        if name in self.groups:
            return [self.suites[s] for s in self.groups[name]]
        raise unknown_name("suite", name, self.names())


_SUITE_KEYS = {
    "benchmark",
    "n_tasks",
    "label",
    "max_steps",
    "aliases",
    "max_steps_alternatives",
    "protocol",
    "backend",
    "backends",
    "tasks",
}


def _family_suites(path: Path) -> tuple[list[SuiteSpec], dict[str, tuple[str, ...]]]:
    data = read_yaml(path)
    for key in ("family", "protocol_version", "protocol", "suites"):
        if key not in data:
            raise UserError(f"{path} lacks '{key}'; see content/suites/libero.yaml for the form of a suite family.")
    specs = []
    for name, values in data["suites"].items():
        values = dict(values or {})
        unknown = sorted(set(values) - _SUITE_KEYS)
        if unknown:
            raise UserError(f"{path}: suite '{name}' has unknown key '{unknown[0]}'.")
        protocol = {**data["protocol"], **values.get("protocol", {})}
        if "max_steps" in values:
            protocol["max_steps"] = values["max_steps"]
        tasks = list(values.get("tasks", []))
        if tasks:  # per-task grids (SIMPLER): the runner's caps are the largest task's
            protocol = with_grid_trials(
                {**protocol, "max_steps": max(int(t["max_steps"]) for t in tasks), "tasks": tasks}
            )
        alternatives = {k: dict(v) for k, v in (data.get("alternatives") or {}).items()}
        if "max_steps_alternatives" in values:
            alternatives["max_steps"] = dict(values["max_steps_alternatives"])
        backend = str(values.get("backend", data.get("backend", "")))
        specs.append(
            SuiteSpec(
                name=name,
                family=str(data["family"]),
                backend=backend,
                backends=tuple(values.get("backends", [backend])),
                protocol_version=int(data["protocol_version"]),
                robot=str(data.get("robot", "")),
                protocol=protocol,
                n_tasks=len(tasks) or int(values.get("n_tasks", 1)),
                label=str(values.get("label", name)),
                aliases=tuple(values.get("aliases", ())),
                alternatives=alternatives,
                extra={"benchmark": values.get("benchmark", name), "source": str(path), "tasks": tasks},
            )
        )
    groups = {g: tuple(members) for g, members in (data.get("groups") or {}).items()}
    return specs, groups


@lru_cache(maxsize=1)
def suite_registry() -> SuiteRegistry:
    """Every suite family in the content folders."""
    suites: dict[str, SuiteSpec] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for folder in content_dirs("suites"):
        for path in sorted(folder.glob("*.yaml")):
            specs, family_groups = _family_suites(path)
            suites.update({s.name: s for s in specs})
            groups.update(family_groups)
    aliases = {alias: s.name for s in suites.values() for alias in s.aliases}
    for group, members in groups.items():
        missing = [m for m in members if m not in suites]
        if missing:
            raise UserError(f"suite group '{group}' names unknown suite '{missing[0]}'.")
    return SuiteRegistry(suites, groups, aliases)


def suite_trials(suite: str) -> dict[int, int] | None:
    """Each task of a registered suite -> its protocol trials (None for a name that is no suite)."""
    spec = suite_registry().suites.get(suite)
    return dict(enumerate(spec.task_episode_counts())) if spec is not None else None

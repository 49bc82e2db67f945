"""Names -> perturbations: the dimensions, levels, paraphrase rules and presets of
`content/suites/perturbations/<family>.yaml` (docs/robustness.md).

A content root of the user's (`QDEPTH_BENCH_CONTENT`) with its own `suites/perturbations/<family>.yaml` adds
dimensions or replaces same-named ones: how settings published elsewhere (e.g. LIBERO-plus' camera offsets)
are run, with their `source` recorded in each run's protocol.

`--perturb camera_pose:3` names dimension `camera_pose` at level 3 (levels count from 1, weakest first); the
result is a `core.perturbation.Perturbation` with every parameter the simulator applies, recorded in the
perturbed run's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.perturbation import Perturbation
from qdepth_bench.core.protocol import SuiteSpec
from qdepth_bench.registry.base import read_yaml, unknown_name
from qdepth_bench.registry.content import content_dirs

#: what each kind's levels must give (besides `strength`), so a typo fails when the file is read
KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "camera_pose": ("yaw_deg", "pitch_deg", "distance_scale"),
    "camera_fov": ("fovy_delta_deg",),
    "light": ("intensity", "colour", "tilt_deg"),
    "joint_noise": ("std_rad",),
    "layout_shift": ("shift_m",),
    "sensor_noise": ("std",),
    "paraphrase": ("template",),
}


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str
    version: int
    unit: str
    levels: tuple[dict[str, Any], ...]
    source: str


@dataclass(frozen=True)
class PerturbationFamily:
    """The perturbations of one suite family (e.g. libero)."""

    family: str
    dimensions: dict[str, Dimension]
    presets: dict[str, tuple[str, ...]]
    paraphrases: tuple[dict[str, Any], ...]

    def dimension(self, name: str) -> Dimension:
        if name not in self.dimensions:
            raise unknown_name(
                f"{self.family} perturbation", name, list(self.dimensions), "content/suites/perturbations/"
            )
        return self.dimensions[name]

    def preset(self, name: str) -> tuple[str, ...]:
        """A preset's dimensions; a dimension's name is a preset of that one dimension."""
        if name in self.presets:
            return self.presets[name]
        if name in self.dimensions:
            return (name,)
        raise unknown_name("robustness preset or dimension", name, [*self.presets, *self.dimensions])

    def perturbation(self, name: str, level: int, seed: int = 0) -> Perturbation:
        """Dimension `name` at `level` (1 = weakest), with the draws seeded by `seed`."""
        dim = self.dimension(name)
        if not 1 <= level <= len(dim.levels):
            raise UserError(f"perturbation '{name}' has levels 1..{len(dim.levels)}; got level {level}.")
        params = {k: v for k, v in dim.levels[level - 1].items() if k != "strength"}
        if dim.kind == "paraphrase":  # the rules themselves are part of the record
            params["rules"] = [dict(rule) for rule in self.paraphrases]
        return Perturbation(
            dimension=name,
            kind=dim.kind,
            level=level,
            strength=float(dim.levels[level - 1]["strength"]),
            params=params,
            seed=seed,
            version=dim.version,
            source=dim.source,
            unit=dim.unit,
        )


def _dimension(path: str, name: str, values: dict[str, Any]) -> Dimension:
    kind = str(values.get("kind", ""))
    if kind not in KIND_PARAMS:
        raise UserError(f"{path}: perturbation '{name}' has kind '{kind}'; use one of {', '.join(KIND_PARAMS)}.")
    levels = tuple(dict(level) for level in values.get("levels") or ())
    if not levels:
        raise UserError(f"{path}: perturbation '{name}' has no levels; list at least one under 'levels'.")
    for i, level in enumerate(levels, 1):
        missing = [k for k in ("strength", *KIND_PARAMS[kind]) if k not in level]
        if missing:
            raise UserError(f"{path}: level {i} of perturbation '{name}' lacks '{missing[0]}'.")
    source = str(values.get("source", "qdepth-bench"))
    return Dimension(name, kind, int(values.get("version", 1)), str(values.get("unit", "")), levels, source)


@lru_cache(maxsize=4)
def perturbation_family(family: str) -> PerturbationFamily:
    """The perturbations of a suite family, built-in file first, user content roots after (later wins)."""
    dimensions: dict[str, Dimension] = {}
    presets: dict[str, tuple[str, ...]] = {}
    paraphrases: list[dict[str, Any]] = []
    for folder in content_dirs("suites"):
        path = folder / "perturbations" / f"{family}.yaml"
        if not path.is_file():
            continue
        data = read_yaml(path)
        for name, values in (data.get("dimensions") or {}).items():
            dimensions[name] = _dimension(str(path), name, dict(values))
        presets.update({k: tuple(v) for k, v in (data.get("presets") or {}).items()})
        paraphrases = [dict(r) for r in data.get("paraphrases") or ()] or paraphrases
    if not dimensions:
        raise UserError(
            f"suite family '{family}' has no perturbations; add content/suites/perturbations/{family}.yaml."
        )
    for preset, members in presets.items():
        unknown = [m for m in members if m not in dimensions]
        if unknown:
            raise UserError(f"robustness preset '{preset}' names unknown perturbation '{unknown[0]}'.")
    return PerturbationFamily(family, dimensions, presets, tuple(paraphrases))


def parse_perturb(text: str) -> tuple[str, int]:
    """'camera_pose:3' -> ('camera_pose', 3); a malformed value is refused in one line."""
    name, _, level = text.partition(":")
    if not name or not level.strip().isdigit():
        raise UserError(f"--perturb '{text}' is not DIMENSION:LEVEL, e.g. camera_pose:3.")
    return name.strip(), int(level)


def perturbed(spec: SuiteSpec, text: str, seed: int = 0) -> SuiteSpec:
    """`spec` with the perturbation `text` (DIMENSION:LEVEL) recorded in its protocol."""
    name, level = parse_perturb(text)
    return spec.with_perturbation(perturbation_family(spec.family).perturbation(name, level, seed))

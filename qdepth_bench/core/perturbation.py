"""Perturbations as protocol data: one named, seeded, versioned change to a suite's scene or instruction.

A perturbed suite is the unperturbed suite with one more protocol entry, `perturbation` (this record). The
unperturbed protocol never carries the key, so its hash, its runs and its episodes stay exactly as they
were; the perturbed protocol hashes differently, so its runs are runs of their own. The suite name, the env
seed and the initial states are untouched, so perturbed episode i of task t has the same seed and initial
state as unperturbed episode i of task t: its twin, which the robustness report pairs it with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import stable_hash

#: the protocol key a perturbation is recorded under
PERTURBATION_KEY = "perturbation"


@dataclass(frozen=True)
class Perturbation:
    """One level of one perturbation dimension, with every parameter its simulator applies.

    `kind` says what a simulator does (e.g. `camera_pose`); `dimension` is the user's name for it (several
    dimensions may share a kind); `strength` is the number the report plots on its x axis; `seed` fixes
    every random draw (joint noise, layout shifts, sensor noise), together with each episode's own seed."""

    dimension: str
    kind: str
    level: int
    strength: float
    params: dict[str, Any]
    seed: int = 0
    version: int = 1
    #: where the parameters come from: this project's perturbation file, or a LIBERO-plus folder
    source: str = ""
    unit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What the protocol records (and hashes) for this perturbation."""
        return {
            "dimension": self.dimension,
            "kind": self.kind,
            "level": self.level,
            "strength": self.strength,
            "unit": self.unit,
            "params": self.params,
            "seed": self.seed,
            "version": self.version,
            "source": self.source,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Perturbation:
        return cls(
            dimension=str(record["dimension"]),
            kind=str(record["kind"]),
            level=int(record["level"]),
            strength=float(record["strength"]),
            params=dict(record["params"]),
            seed=int(record.get("seed", 0)),
            version=int(record.get("version", 1)),
            source=str(record.get("source", "")),
            unit=str(record.get("unit", "")),
        )

    def rng(self, episode_seed: int, stream: str) -> np.random.Generator:
        """A generator of its own for one episode and one use (e.g. 'joints', 'image'): the same draws for
        every policy on that episode, and never numpy's global generator, which the simulator draws from."""
        return np.random.default_rng([self.seed, episode_seed, int(stable_hash(stream, 8), 16)])

    def instruction(self, text: str) -> str:
        """The task's instruction as this perturbation gives it: a paraphrase reworded by template
        `template` of the first rule whose pattern matches the whole instruction; other kinds keep it."""
        if self.kind != "paraphrase":
            return text
        for rule in self.params["rules"]:
            match = re.fullmatch(str(rule["pattern"]), text.strip())
            if match:
                templates = list(rule["templates"])
                return str(templates[int(self.params["template"]) % len(templates)]).format(**match.groupdict())
        raise UserError(
            f"no paraphrase rule matches the instruction '{text}'; add one under 'paraphrases' in "
            "content/suites/perturbations/libero.yaml."
        )


def perturbation_of(protocol: dict[str, Any]) -> Perturbation | None:
    """The perturbation a protocol (or protocol record) carries; None for an unperturbed one."""
    record = protocol.get(PERTURBATION_KEY)
    return Perturbation.from_record(record) if record else None


def unperturbed_record(protocol_record: dict[str, Any]) -> dict[str, Any]:
    """A perturbed run's protocol record as its unperturbed twin's run records it."""
    return {k: v for k, v in protocol_record.items() if k != PERTURBATION_KEY}

"""The policy protocol: the one meeting point of policies and suites.

A policy is reset once per episode with the task it will face, then maps a *batch* of observations (rows
from different episodes, possibly of different tasks) to a batch of action chunks. Batches let one model
call serve many simulator workers. A policy declares what it needs (camera roles, state layout, chunk size,
action dimension) so the suite renders only those cameras, and it has a stable identity that the results
store records with every run.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import stable_hash

#: Camera roles a policy can ask for; each suite maps them to its simulator's cameras.
CAMERA_ROLES = ("main", "wrist")


@dataclass(frozen=True)
class TaskInfo:
    """What a policy is told about the task of an episode."""

    suite: str
    task_id: int
    task_name: str
    instruction: str
    robot: str
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    noop_action: tuple[float, ...]
    state_layout: str

    @property
    def action_dim(self) -> int:
        return len(self.noop_action)


@dataclass(frozen=True)
class EpisodeContext:
    """Passed to `Policy.reset`: the episode's unique key within its run, its task and its seed."""

    key: str
    task: TaskInfo
    seed: int


@dataclass
class ObservationBatch:
    """B observations: camera images by role as uint8 (B, H, W, 3), proprio state (B, D) in the simulator's
    own dtype (float64 on LIBERO: a policy casts after its normalisation, as the reference loops do), instructions.

    `keys[i]` is the episode key of row i, so a stateful policy can keep per-episode state across calls.
    `depth` holds (B, H, W) float32 metric depth per camera role, only when the policy asked for it.
    `privileged` holds per-row simulator state (object poses) for scripted experts that ask for it; a
    learned policy never gets it.
    """

    keys: list[str]
    images: dict[str, np.ndarray]
    state: np.ndarray
    instructions: list[str]
    depth: dict[str, np.ndarray] = field(default_factory=dict)
    privileged: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def concat(cls, batches: list[ObservationBatch]) -> ObservationBatch:
        """Stack the rows of several batches (one per env worker) into one batch for a single policy call."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        return cls(
            keys=[k for b in batches for k in b.keys],
            images={role: np.concatenate([b.images[role] for b in batches]) for role in first.images},
            state=np.concatenate([b.state for b in batches]),
            instructions=[t for b in batches for t in b.instructions],
            depth={role: np.concatenate([b.depth[role] for b in batches]) for role in first.depth},
            privileged=[p for b in batches for p in b.privileged],
        )


@dataclass(frozen=True)
class PolicyRequirements:
    """What a policy needs from the suite.

    `state_layouts` lists the proprio layouts it understands (empty: any); `action_dim` None means it adapts
    to the suite's action space (the simple policies do). What changes the protocol (`image_resize`) is applied
    to the suite as a recorded override (`SuiteSpec.for_policy`), so it shows in the run's protocol.
    """

    cameras: tuple[str, ...] = ("main",)
    image_size: int = 224
    state_layouts: tuple[str, ...] = ()
    chunk_size: int = 1
    action_dim: int | None = None
    depth: bool = False
    privileged: bool = False
    #: how frames are resized to `image_size` when the policy was trained another way than the suite's
    #: protocol resizes ("lanczos4": OpenCV's Lanczos, as open-pi-zero); None: the protocol's own
    image_resize: str | None = None

    @property
    def env_view(self) -> tuple[Any, ...]:
        """What building an env depends on (cameras, frame size, depth, privileged state); an env built for
        one set of requirements serves any other with the same view."""
        return (self.cameras, self.image_size, self.depth, self.privileged)


def check_ranges(config: Any, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Refuse (ValueError, shown as one line by the registry) option values no policy can run with, before
    any episode is spent on them; None means 'the default' and passes."""
    for names, ok, wanted in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0")):
        for name in names:
            value = getattr(config, name)
            if value is not None and not ok(value):
                raise ValueError(f"{name} must be {wanted} (got {value})")


#: The weights file of a checkpoint folder; its `file_hash` is the policy's checkpoint hash, so results can be
#: matched to a folder without loading it.
CHECKPOINT_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class PolicyIdentity:
    """What makes two policies the same for the results store: name, config hash and checkpoint hash."""

    name: str
    config: dict[str, Any]
    config_hash: str
    checkpoint_hash: str | None = None

    def as_record(self) -> dict[str, Any]:
        return {
            "policy_name": self.name,
            "policy_config_hash": self.config_hash,
            "policy_checkpoint_hash": self.checkpoint_hash or "",
        }


#: what a policy's depth head predicts (`Policy.depth_output`): codes of its depth VQ-VAE, or depth itself
DEPTH_OUTPUTS = ("tokens", "pixels")


@dataclass
class DepthPrediction:
    """What a policy predicted about the main camera's depth for each row of a batch, beside its actions
    (`Policy.act_with_depth`): logits (B, N, K) over its depth codebook for a token head, or a relative depth
    map (B, H, W) in [0, 1] (0 near, 1 far) for a pixel head."""

    logits: np.ndarray | None = None
    relative: np.ndarray | None = None


def no_depth_head(policy_name: str) -> UserError:
    """The one line for asking depth predictions of a policy without a depth head."""
    return UserError(
        f"policy {policy_name} has no depth head, so --depth-metrics has nothing to score; drop --depth-metrics "
        "or evaluate a policy that predicts depth (e.g. qdepth)."
    )


class DepthCodec(Protocol):
    """The policy's own depth tokenizer (its VQ-VAE), which turns the simulator's depth into the codes its
    depth head was trained to predict, and predicted codes back into depth."""

    @property
    def codebook_size(self) -> int: ...

    def encode(self, relative: np.ndarray) -> np.ndarray:
        """(B, H, W) relative depth in [0, 1] -> (B, N) code indices."""

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(B, N) code indices -> (B, H, W) relative depth, clipped to [0, 1]."""


class Policy(ABC):
    """Base class for every policy. Subclasses set `Config` (a dataclass of their options)."""

    #: The dataclass of this policy's options; the registry builds it from YAML and `--policy-arg`.
    Config: ClassVar[type] = type("Config", (), {})
    #: whether its actions depend on the episode seed; without it, repeats of an episode (`--repeats`) are
    #: identical wherever the simulator does not draw from the seed either (LIBERO)
    uses_seed: ClassVar[bool] = True

    def __init__(self, config: Any, name: str) -> None:
        self.config = config
        self.name = name
        #: what the user should know about how this policy was built (e.g. which checkpoint it fell back
        #: to); the CLI prints these, library code never prints
        self.notices: list[str] = []

    @property
    @abstractmethod
    def requirements(self) -> PolicyRequirements:
        """Cameras, state layouts, chunk size and action dimension this policy needs."""

    def checkpoint_hash(self) -> str | None:
        """Hash of the weights this policy runs with; None for policies without weights."""
        return None

    def identity(self) -> PolicyIdentity:
        is_config = dataclasses.is_dataclass(self.config) and not isinstance(self.config, type)
        config = dataclasses.asdict(self.config) if is_config else {}
        # options added to a policy after it had recorded results count only once set, so a new option
        # leaves the identity (and the matching of those results) of every run that does not use it alone
        later = getattr(self.config, "IDENTITY_WHEN_SET", ())
        defaults = {f.name: f for f in dataclasses.fields(self.config)} if is_config else {}
        for name in later:
            field = defaults[name]
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            if config.get(name) == default:
                del config[name]
        return PolicyIdentity(self.name, config, stable_hash(config), self.checkpoint_hash())

    def reset(self, episode: EpisodeContext) -> None:
        """Called before each episode; the default keeps no per-episode state."""

    @abstractmethod
    def act(self, batch: ObservationBatch) -> np.ndarray:
        """Return action chunks of shape (B, chunk, action_dim) as float32."""

    def depth_output(self) -> str:
        """What its depth head predicts: "tokens", "pixels", or "" for a policy without one."""
        return ""

    def depth_codec(self, vqvae: Path | None) -> DepthCodec:
        """The VQ-VAE whose codes its token head predicts (`vqvae`: a folder given by the user; None: the one
        the policy knows it was trained with). Only for a policy whose `depth_output` is "tokens"."""
        raise UserError(f"policy {self.name} predicts no depth tokens, so it has no depth VQ-VAE.")

    def act_with_depth(self, batch: ObservationBatch) -> tuple[np.ndarray, DepthPrediction]:
        """`act`, and what the depth head predicted for the same observations (the optional output of the
        contract, asked for by `run --depth-metrics`); the actions must be those `act` returns."""
        raise no_depth_head(self.name)

    def close(self) -> None:
        """Release resources (model memory, connections)."""

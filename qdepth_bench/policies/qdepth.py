"""QDepth-VLA and its ablation variants (and open-pi0) behind the common policy interface.

The policy loads a checkpoint folder (see `models/qdepth/checkpoint.py`): the variant recorded in it must
be the one registered under this policy's name, so a table row can never mix variants. Noise for the flow
integration is drawn per episode from the episode seed, and by default each row runs through the model on its
own: a batched matrix product rounds a row differently with other rows beside it (~1e-7 here), and over a
few hundred closed-loop steps that flips episodes, so a run's outcome would depend on how the engine happened
to batch the env workers. `batch_invariant=false` batches the rows for throughput (a large model on a GPU
serving many workers); the option is part of the policy's identity, so such runs are recorded apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.imaging import RESIZE_METHODS
from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, Policy, PolicyRequirements, check_ranges
from qdepth_bench.models.preprocessing import images_to_model
from qdepth_bench.registry.content import builtin_root, content_path


@dataclass
class QDepthPolicyConfig:
    """`checkpoint`: a checkpoint folder. `default_checkpoint`: the folder used when no checkpoint is given,
    relative to a content root (so the identity is the same on every machine): the small model trained here
    that ships with the project, or a model an ablation trained into a content folder. `variant`: the registered
    variant this policy must be. `num_steps`: Euler steps of the flow integration (None: the checkpoint's, 10
    in the paper). `batch_invariant`: run each row on its own, so its actions are bit-identical whatever
    episodes share its batch (false: one batched pass, faster with many workers, not bit-reproducible).

    Checkpoints of other implementations (a file, e.g. open-pi-zero's `step19296.pt`): `format` names its
    key map and conventions (content/formats/; empty: recognised from the file), `statistics` its
    normalisation JSON, `tokenizer` a local PaliGemma folder for its prompts, `model` overrides of the
    format's conventions (e.g. time_max_period). Evaluation conventions of a checkpoint family:
    `act_steps` actions executed per predicted chunk (None: all), `image_resize` the frame resizing it was
    trained with (None: the suite's), `state_layouts` the proprio layouts it was trained on (empty: any),
    `cameras` the camera roles in the model's image order ("-": a slot the model has but the suite does not
    fill, passed masked, as openpi pads a missing camera), `pad_state` zero-pads the normalised state to the
    model's width (openpi trains at 32 dims); the executed actions are the statistics' leading dimensions."""

    checkpoint: str = ""
    default_checkpoint: str = ""
    variant: str = "qdepth"
    device: str = "cpu"
    num_steps: int | None = None
    batch_invariant: bool = True
    format: str = ""
    statistics: str = ""
    tokenizer: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    act_steps: int | None = None
    image_resize: str | None = None
    state_layouts: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ("main",)
    pad_state: bool = False

    #: options added after results were recorded: part of the identity only when set (`Policy.identity`)
    IDENTITY_WHEN_SET: ClassVar[tuple[str, ...]] = (
        "format",
        "statistics",
        "tokenizer",
        "model",
        "act_steps",
        "image_resize",
        "state_layouts",
        "cameras",
        "pad_state",
    )

    def __post_init__(self) -> None:
        check_ranges(self, positive=("num_steps", "act_steps"))
        if self.image_resize is not None and self.image_resize not in RESIZE_METHODS:
            raise ValueError(f"image_resize must be one of {', '.join(RESIZE_METHODS)} (got {self.image_resize})")
        self.state_layouts = tuple(self.state_layouts)
        self.cameras = tuple(self.cameras)
        if not self.cameras or self.cameras[0] == "-":
            raise ValueError("cameras must start with the camera the model reads first, e.g. main")


class QDepthPolicy(Policy):
    Config = QDepthPolicyConfig

    def __init__(self, config: QDepthPolicyConfig, name: str = "qdepth") -> None:
        super().__init__(config, name)
        import torch

        if config.checkpoint:
            folder = Path(config.checkpoint)
        else:
            folder, notice = self._shipped(config, name)
            self.notices.append(notice)
        if not folder.exists():
            raise UserError(f"checkpoint {folder} does not exist; check --checkpoint.")
        from qdepth_bench.models.qdepth.formats import detect_format

        self._torch = torch
        fmt = config.format or detect_format(folder)
        self.loaded = self._load(folder, fmt, config)
        if fmt and not config.format:
            self._family_notice(folder, fmt, name)
        if self.loaded.variant != config.variant:
            raise UserError(
                f"{folder} holds a '{self.loaded.variant}' model, not '{config.variant}'; "
                f"use --policy {self.loaded.variant} with it."
            )
        self.model = self.loaded.model
        if config.num_steps is not None:
            self.model.config = self.model.config.replace(num_integration_steps=config.num_steps)
        self._noise: dict[str, torch.Generator] = {}

    def _family_notice(self, path: Path, fmt: str, name: str) -> None:
        """A foreign checkpoint run without its family's policy gets this project's evaluation conventions:
        said up front, with the policies that carry the family's own."""
        from qdepth_bench.models.qdepth.formats import checkpoint_format

        families = checkpoint_format(fmt).policies
        self.notices.append(
            f"{name}: {path.name} is a {fmt} checkpoint run with this policy's own evaluation conventions; "
            f"its family's (cameras, padding, chunk execution, resizing) are in --policy {' / '.join(families)}."
        )

    @staticmethod
    def _load(path: Path, fmt: str, config: QDepthPolicyConfig) -> Any:
        """This project's checkpoint folder (`fmt` empty), or another implementation's through its format."""
        from qdepth_bench.models.qdepth.checkpoint import load_checkpoint
        from qdepth_bench.models.qdepth.formats import load_foreign_checkpoint

        if fmt == "?":
            raise UserError(
                f"{path} is a file this policy does not recognise; pass a checkpoint folder, an open-pi-zero "
                ".pt file, or name its format with -a format=NAME (content/formats/)."
            )
        if not fmt:
            return load_checkpoint(path, config.device)
        return load_foreign_checkpoint(
            path,
            fmt,
            dict(config.model),
            Path(config.statistics) if config.statistics else None,
            Path(config.tokenizer) if config.tokenizer else None,
            config.device,
        )

    @staticmethod
    def _shipped(config: QDepthPolicyConfig, name: str) -> tuple[Path, str]:
        """The small checkpoint that ships with the project, announced so nobody mistakes it for the paper's."""
        if not config.default_checkpoint:
            raise UserError(
                f"policy {name} needs a checkpoint: --checkpoint FOLDER (a folder written by "
                "`qdepth-bench train policy`)."
            )
        folder = content_path(config.default_checkpoint)
        if not folder.is_relative_to(builtin_root()):
            return folder, f"{name}: no --checkpoint given, using {folder} (a content folder's)."
        notice = (
            f"{name}: no --checkpoint given, using the shipped {config.default_checkpoint}: a small model (tiny size, "
            "trained from scratch on this project's scripted LIBERO-Object demos, tasks 0 and 3, see "
            "docs/training.md), not the paper's weights; pass --checkpoint FOLDER for real weights."
        )
        return folder, notice

    @property
    def requirements(self) -> PolicyRequirements:
        c, config = self.model.config, self.config
        return PolicyRequirements(
            cameras=tuple(role for role in config.cameras if role != "-"),
            image_size=c.vision.image_size,
            chunk_size=min(config.act_steps or c.chunk_size, c.chunk_size),
            action_dim=len(self.loaded.stats.action_low),
            state_layouts=config.state_layouts,
            image_resize=config.image_resize,
        )

    def checkpoint_hash(self) -> str | None:
        return self.loaded.weights_hash

    def reset(self, episode: EpisodeContext) -> None:
        self._noise[episode.key] = self._torch.Generator().manual_seed(episode.seed)

    def act(self, batch: ObservationBatch) -> np.ndarray:
        from qdepth_bench.models.qdepth.model import Batch

        torch, c, stats, config = self._torch, self.model.config, self.loaded.stats, self.config
        given, trained = batch.state.shape[1], len(stats.state_low)
        if given != trained:
            raise UserError(
                f"the suite gives {given}-dim proprio state but this checkpoint was trained on {trained}-dim "
                "state; use a checkpoint trained for this suite."
            )
        if given != c.state_dim and not (config.pad_state or self.loaded.pads_state):
            raise UserError(
                f"this checkpoint's model takes {c.state_dim}-dim state and the suite gives {given}: its family pads "
                "the state; use the family's policy (e.g. --policy openpi-pi0-libero) or -a pad_state=true."
            )
        device = config.device
        images = self._images(batch)
        tokens, token_mask = self.loaded.tokenizer(batch.instructions)
        state = torch.zeros(len(batch), c.state_dim)
        state[:, :given] = torch.from_numpy(stats.normalize_state(batch.state)).float()
        noise = torch.stack([torch.randn(c.chunk_size, c.action_dim, generator=self._noise[k]) for k in batch.keys])
        inputs = Batch(
            images.to(device),
            torch.from_numpy(tokens).to(device),
            torch.from_numpy(token_mask).to(device),
            state.to(device),
            image_masks=None if images.ndim == 4 else self._image_masks(len(batch)).to(device),
        )
        rows = [slice(i, i + 1) for i in range(len(batch))] if self.config.batch_invariant else [slice(None)]
        actions = torch.cat([self.model.sample_actions(inputs.rows(r), noise=noise[r].to(device)) for r in rows])
        # a family may execute only the chunk's first steps, and only its statistics' leading dimensions
        executed = actions[:, : self.requirements.chunk_size, : len(stats.action_low)]
        return stats.unnormalize_actions(executed.cpu().numpy()).astype(np.float32)

    def _images(self, batch: ObservationBatch) -> Any:
        """(B, 3, H, W) for one camera; (B, N, 3, H, W) for several, a masked slot black (as openpi pads it)."""
        roles = self.config.cameras
        views = {role: images_to_model(batch.images[role]) for role in roles if role != "-"}
        if len(roles) == 1:
            return views[roles[0]]
        black = self._torch.full_like(views[roles[0]], -1.0)
        return self._torch.stack([views.get(role, black) for role in roles], dim=1)

    def _image_masks(self, rows: int) -> Any:
        return self._torch.tensor([role != "-" for role in self.config.cameras]).expand(rows, -1)

    def close(self) -> None:
        self._noise.clear()

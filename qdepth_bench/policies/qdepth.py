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

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdepth_bench.core.errors import UserError
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
    episodes share its batch (false: one batched pass, faster with many workers, not bit-reproducible)."""

    checkpoint: str = ""
    default_checkpoint: str = ""
    variant: str = "qdepth"
    device: str = "cpu"
    num_steps: int | None = None
    batch_invariant: bool = True

    def __post_init__(self) -> None:
        check_ranges(self, positive=("num_steps",))


class QDepthPolicy(Policy):
    Config = QDepthPolicyConfig

    def __init__(self, config: QDepthPolicyConfig, name: str = "qdepth") -> None:
        super().__init__(config, name)
        import torch

        from qdepth_bench.models.qdepth.checkpoint import load_checkpoint

        if config.checkpoint:
            folder = Path(config.checkpoint)
        else:
            folder, notice = self._shipped(config, name)
            self.notices.append(notice)
        if not folder.exists():
            raise UserError(f"checkpoint folder {folder} does not exist; check --checkpoint.")
        self._torch = torch
        self.loaded = load_checkpoint(folder, config.device)
        if self.loaded.variant != config.variant:
            raise UserError(
                f"{folder} holds a '{self.loaded.variant}' model, not '{config.variant}'; "
                f"use --policy {self.loaded.variant} with it."
            )
        self.model = self.loaded.model
        if config.num_steps is not None:
            self.model.config = self.model.config.replace(num_integration_steps=config.num_steps)
        self._noise: dict[str, torch.Generator] = {}

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
        c = self.model.config
        return PolicyRequirements(
            cameras=("main",), image_size=c.vision.image_size, chunk_size=c.chunk_size, action_dim=c.action_dim
        )

    def checkpoint_hash(self) -> str | None:
        return self.loaded.weights_hash

    def reset(self, episode: EpisodeContext) -> None:
        self._noise[episode.key] = self._torch.Generator().manual_seed(episode.seed)

    def act(self, batch: ObservationBatch) -> np.ndarray:
        from qdepth_bench.models.qdepth.model import Batch

        torch, c, stats = self._torch, self.model.config, self.loaded.stats
        if batch.state.shape[1] != c.state_dim:
            raise UserError(
                f"the suite gives {batch.state.shape[1]}-dim proprio state but this checkpoint was "
                f"trained on {c.state_dim}-dim state; use a checkpoint trained for this suite."
            )
        device = self.config.device
        images = images_to_model(batch.images["main"], device)
        tokens, token_mask = self.loaded.tokenizer(batch.instructions)
        state = torch.from_numpy(stats.normalize_state(batch.state)).float().to(device)
        noise = torch.stack([torch.randn(c.chunk_size, c.action_dim, generator=self._noise[k]) for k in batch.keys])
        inputs = Batch(images, torch.from_numpy(tokens).to(device), torch.from_numpy(token_mask).to(device), state)
        rows = [slice(i, i + 1) for i in range(len(batch))] if self.config.batch_invariant else [slice(None)]
        actions = torch.cat([self.model.sample_actions(inputs.rows(r), noise=noise[r].to(device)) for r in rows])
        return stats.unnormalize_actions(actions.cpu().numpy()).astype(np.float32)

    def close(self) -> None:
        self._noise.clear()

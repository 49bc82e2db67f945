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
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.imaging import RESIZE_METHODS
from qdepth_bench.core.policy import (
    CHECKPOINT_WEIGHTS,
    DepthCodec,
    DepthPrediction,
    EpisodeContext,
    ObservationBatch,
    Policy,
    PolicyRequirements,
    check_ranges,
)
from qdepth_bench.models.preprocessing import images_to_model
from qdepth_bench.registry.content import builtin_root, content_path

if TYPE_CHECKING:
    from qdepth_bench.models.qdepth.checkpoint import DatasetStats


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
    model's width (openpi trains at 32 dims); the executed actions are the statistics' leading dimensions.

    A checkpoint trained on a mixture (`datasets.json`) keeps each dataset's statistics and widths; `dataset`
    names the one to drive the suite with (empty: the first dataset whose state layout is the suite's, or the
    only one). Its state is normalised with that dataset's statistics and zero-padded to the model's width,
    the flow is held at zero on the action dimensions the dataset did not have (as in training), and its own
    leading action dimensions are executed."""

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
    dataset: str = ""

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
        "dataset",
    )

    def __post_init__(self) -> None:
        check_ranges(self, positive=("num_steps", "act_steps"))
        if self.image_resize is not None and self.image_resize not in RESIZE_METHODS:
            raise ValueError(f"image_resize must be one of {', '.join(RESIZE_METHODS)} (got {self.image_resize})")
        self.state_layouts = tuple(self.state_layouts)
        self.cameras = tuple(self.cameras)
        if not self.cameras or self.cameras[0] == "-":
            raise ValueError("cameras must start with the camera the model reads first, e.g. main")


#: where a checkout keeps the depth VQ-VAEs the shipped models were trained with (results/training/README.md)
TRAINED_VQVAES = Path("results/training")


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
        from qdepth_bench.models.qdepth.checkpoint import DatasetStats

        self._datasets = self.loaded.datasets or [DatasetStats("", "", self.loaded.stats)]
        self._fixed = self._named(folder, config.dataset) if config.dataset else None
        self._dataset: dict[str, DatasetStats] = {}  # per episode key: whose statistics and widths

    def _named(self, folder: Path, name: str) -> DatasetStats:
        found = [d for d in self._datasets if d.name == name]
        if not found:
            names = ", ".join(d.name or "(unnamed)" for d in self._datasets)
            raise UserError(f"{folder} was not trained on a dataset named {name!r}; its datasets: {names}.")
        return found[0]

    def _for_layout(self, layout: str) -> DatasetStats:
        """The dataset whose statistics drive a suite of this state layout (see the config)."""
        if self._fixed is not None:
            return self._fixed
        matching = [d for d in self._datasets if d.state_layout == layout]
        if matching or len(self._datasets) == 1:
            return (matching or self._datasets)[0]
        trained = ", ".join(f"{d.name} ({d.state_layout or 'layout unknown'})" for d in self._datasets)
        raise UserError(
            f"this checkpoint was trained on {trained}; none has the suite's state layout {layout}: "
            "name the one to use with -a dataset=NAME."
        )

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
            action_dim=self._action_dim(),
            state_layouts=config.state_layouts,
            image_resize=config.image_resize,
        )

    def _action_dim(self) -> int | None:
        """The actions emitted: the chosen dataset's width, or the datasets' common one (None: it varies)."""
        widths = {d.action_dim for d in ([self._fixed] if self._fixed else self._datasets)}
        return widths.pop() if len(widths) == 1 else None

    def checkpoint_hash(self) -> str | None:
        return self.loaded.weights_hash

    def reset(self, episode: EpisodeContext) -> None:
        self._noise[episode.key] = self._torch.Generator().manual_seed(episode.seed)
        self._dataset[episode.key] = self._for_layout(episode.task.state_layout)

    def act(self, batch: ObservationBatch) -> np.ndarray:
        return self._act(batch, with_depth=False)[0]

    def depth_output(self) -> str:
        head = self.model.config
        return "" if not head.has_depth else ("tokens" if head.depth_target == "tokens" else "pixels")

    def depth_codec(self, vqvae: Path | None) -> DepthCodec:
        """The VQ-VAE given, else the one the checkpoint's recipe names (`vqvae` in its config.json), refused
        in one line unless its codebook is the one this checkpoint's depth head scores against."""
        import json

        from qdepth_bench.models.vqvae import VQVAECodec, load_vqvae

        if vqvae is None:
            recorded = json.loads((self.loaded.folder / "config.json").read_text()).get("recipe", {}).get("vqvae")
            if not recorded:
                raise UserError(f"{self.loaded.folder} does not record its depth VQ-VAE; pass --vqvae FOLDER.")
            # where its recipe wrote it, or where a checkout keeps the VQ-VAEs its shipped models were trained with
            places = (Path(recorded), TRAINED_VQVAES / Path(recorded).name)
            found = [p for p in places if (p / CHECKPOINT_WEIGHTS).is_file()]
            if not found:
                raise UserError(
                    f"the depth VQ-VAE this checkpoint was trained with ({recorded}, from its config.json) is not "
                    f"here nor in {TRAINED_VQVAES}; pass --vqvae FOLDER."
                )
            vqvae = found[0]
        model, _ = load_vqvae(vqvae)
        head = self.model.depth_head
        if head is None or not self._torch.equal(model.codebook.detach(), head.codebook):
            raise UserError(
                f"--vqvae {vqvae} is not this policy's own VQ-VAE: its codebook differs from the one in "
                f"{self.loaded.folder.name}'s depth head; pass the VQ-VAE the checkpoint was trained with."
            )
        return VQVAECodec(model)

    def act_with_depth(self, batch: ObservationBatch) -> tuple[np.ndarray, DepthPrediction]:
        if not self.depth_output():
            return super().act_with_depth(batch)
        actions, depth = self._act(batch, with_depth=True)
        values = self._torch.cat(depth).float().cpu().numpy()
        if self.depth_output() == "tokens":
            return actions, DepthPrediction(logits=values)
        return actions, DepthPrediction(relative=np.clip(values, 0.0, 1.0))

    def _act(self, batch: ObservationBatch, with_depth: bool) -> tuple[np.ndarray, list[Any]]:
        """Actions, and with `with_depth` the depth head's output per slice of rows."""
        from qdepth_bench.models.qdepth.model import Batch

        torch, c, config = self._torch, self.model.config, self.config
        datasets = [self._dataset[k] for k in batch.keys]
        given = batch.state.shape[1]
        for trained in {d.state_dim for d in datasets}:
            if given != trained:
                raise UserError(
                    f"the suite gives {given}-dim proprio state but this checkpoint was trained on {trained}-dim "
                    "state; use a checkpoint trained for this suite."
                )
        if given != c.state_dim and not (config.pad_state or self.loaded.datasets):
            raise UserError(
                f"this checkpoint's model takes {c.state_dim}-dim state and the suite gives {given}: its family pads "
                "the state; use the family's policy (e.g. --policy openpi-pi0-libero) or -a pad_state=true."
            )
        widths = {d.action_dim for d in datasets}
        if len(widths) > 1:
            raise UserError("one batch mixes episodes of datasets with different action widths; run one suite per run.")
        width = widths.pop()
        device = config.device
        images = self._images(batch)
        tokens, token_mask = self.loaded.tokenizer(batch.instructions)
        state = torch.zeros(len(batch), c.state_dim)
        for i, d in enumerate(datasets):
            state[i, :given] = torch.from_numpy(d.stats.normalize_state(batch.state[i : i + 1])[0]).float()
        noise = torch.stack([torch.randn(c.chunk_size, c.action_dim, generator=self._noise[k]) for k in batch.keys])
        real = None  # trained with the padded action dimensions masked: hold them at zero here too
        if self.loaded.datasets and width < c.action_dim:
            real = (torch.arange(c.action_dim) < width).float().expand(len(batch), -1).to(device)
        inputs = Batch(
            images.to(device),
            torch.from_numpy(tokens).to(device),
            torch.from_numpy(token_mask).to(device),
            state.to(device),
            image_masks=None if images.ndim == 4 else self._image_masks(len(batch)).to(device),
            action_dim_mask=real,
        )
        rows = [slice(i, i + 1) for i in range(len(batch))] if self.config.batch_invariant else [slice(None)]
        depth = []
        if with_depth:
            outputs = [self.model.sample_actions_and_depth(inputs.rows(r), noise=noise[r].to(device)) for r in rows]
            actions = torch.cat([a for a, _ in outputs])
            depth = [d for _, d in outputs]
        else:
            actions = torch.cat([self.model.sample_actions(inputs.rows(r), noise=noise[r].to(device)) for r in rows])
        # a family may execute only the chunk's first steps, and only its statistics' leading dimensions
        executed = actions[:, : self.requirements.chunk_size, :width].cpu().numpy()
        return np.stack([d.stats.unnormalize_actions(executed[i]) for i, d in enumerate(datasets)]).astype(
            np.float32
        ), depth

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

"""Figures (PNG, matplotlib) from the same table views the tables print, so the numbers never differ."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .tables import TableView, method_label


def success_figure(view: TableView | None, out: Path, suite: str) -> Path | None:
    """Grouped bars: success % per task (and the whole suite) for each of our policies, 95% Wilson intervals.

    Returns None (writing nothing) when the suite has no results of ours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in (view.rows if view else []) if r.kind == "ours"]
    if not rows:
        return None
    columns = view.columns
    width = 0.8 / len(rows)
    x = np.arange(len(columns))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(columns) * max(1, len(rows)) ** 0.5 + 2), 4))
    for i, row in enumerate(rows):
        cells = [row.cells.get(c.label) for c in columns]
        rates = np.array([c.rate if c is not None and c.rate is not None else np.nan for c in cells])
        low = np.array([c.ci_low if c is not None and c.ci_low is not None else np.nan for c in cells])
        high = np.array([c.ci_high if c is not None and c.ci_high is not None else np.nan for c in cells])
        errors = np.vstack([np.nan_to_num(rates - low), np.nan_to_num(high - rates)])
        where = x + (i - (len(rows) - 1) / 2) * width
        bars = ax.bar(where, np.nan_to_num(rates), width, yerr=errors, capsize=3, label=method_label(row))
        for j, (bar, cell) in enumerate(zip(bars, cells, strict=True)):
            if cell is not None and cell.errors_only:  # no rate: say so instead of drawing a 0% bar
                ax.text(where[j], 1, f"err {cell.errors}", ha="center", va="bottom", fontsize=7, rotation=90)
            elif cell is not None and (cell.partial or cell.unfinished):  # hatched, its coverage written above
                bar.set_hatch("//")
                bar.set_alpha(0.6)
                top = high[j] if not np.isnan(high[j]) else bar.get_height()
                ax.text(where[j], min(top, 95.0) + 1, cell.marks, ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x, [c.label for c in columns], rotation=30, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel("success % (95% Wilson interval)")
    if any(c is not None and (c.partial or c.unfinished) for r in rows for c in r.cells.values()):
        ax.set_xlabel("hatched: covers only part of the protocol (tasks or trials written above), or an unfinished run",
                      fontsize=7)
    ax.set_title(view.title)
    ax.legend(fontsize=8)
    return _save(fig, out)


def depth_figure(checkpoint: Path, vqvae_folder: Path | None, dataset: Path, out: Path, n_frames: int = 4) -> Path:
    """The paper's Fig. 3: RGB / ground-truth depth / depth decoded from the model's predicted depth tokens
    through the VQ-VAE decoder, for `n_frames` frames spread over the dataset's first demo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from ..data import depth as depth_cache
    from ..data.libero_hdf5 import read_episodes
    from ..models.qdepth.checkpoint import load_checkpoint
    from ..models.qdepth.model import Batch
    from ..train.vqvae import load_vqvae

    loaded = load_checkpoint(checkpoint)
    if vqvae_folder is None:
        recipe_vqvae = json.loads((checkpoint / "config.json").read_text()).get("recipe", {}).get("vqvae")
        if not recipe_vqvae:
            raise UserError(f"{checkpoint} does not record its VQ-VAE; pass --vqvae FOLDER.")
        vqvae_folder = Path(recipe_vqvae)
    vqvae, _ = load_vqvae(vqvae_folder)
    episode = next(iter(read_episodes(dataset, loaded.model.config.vision.image_size, cameras=("main",))))
    demo = episode.source.rsplit(":", 1)[-1]
    truth = depth_cache.read_relative(depth_cache.cache_path(dataset), demo)
    frames = np.linspace(0, len(episode) - 1, n_frames).round().astype(int)
    images = torch.from_numpy(episode.images["main"][frames]).permute(0, 3, 1, 2).float() / 127.5 - 1
    tokens, mask = loaded.tokenizer([episode.instruction] * len(frames))
    state = torch.from_numpy(loaded.stats.normalize_state(episode.state[frames])).float()
    batch = Batch(images, torch.from_numpy(tokens), torch.from_numpy(mask), state)
    with torch.no_grad():
        predicted = vqvae.decode_codes(loaded.model.predict_depth_codes(batch)).clamp(0, 1).numpy()
    fig, axes = plt.subplots(3, len(frames), figsize=(2.4 * len(frames), 7.4), squeeze=False)
    for col, t in enumerate(frames):
        for row, (image, title) in enumerate(((episode.images["main"][t], "RGB"), (truth[t], "ground truth"),
                                              (predicted[col], "prediction"))):
            ax = axes[row][col]
            ax.imshow(image, cmap=None if row == 0 else "viridis", vmin=0, vmax=1 if row else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(title)
        axes[0][col].set_title(f"t = {t}")
    fig.suptitle(f"{episode.instruction} ({loaded.variant}, {checkpoint.name})", fontsize=9)
    return _save(fig, out)


def _save(fig, out: Path) -> Path:  # type: ignore[no-untyped-def]
    """Write a figure as PNG (folders made as needed) and free it; an unwritable path is one line."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}; choose another --out.") from None
    finally:
        plt.close(fig)
    return out

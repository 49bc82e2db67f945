"""The paper's Fig. 3 from a trained checkpoint: RGB, ground-truth depth, and depth decoded from the
model's predicted depth tokens. It runs the model, so it lives with training, not with the reports."""

from __future__ import annotations

import json
from pathlib import Path

from qdepth_bench.core.errors import UserError
from qdepth_bench.report.figures import save_png


def depth_figure(checkpoint: Path, vqvae_folder: Path | None, dataset: Path, out: Path, n_frames: int = 4) -> Path:
    """The paper's Fig. 3: RGB / ground-truth depth / depth decoded from the model's predicted depth tokens
    through the VQ-VAE decoder, for `n_frames` frames spread over the dataset's first demo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from qdepth_bench.datasets import depth as depth_cache
    from qdepth_bench.datasets.libero_hdf5 import read_episodes
    from qdepth_bench.models.preprocessing import images_to_model
    from qdepth_bench.models.qdepth.checkpoint import load_checkpoint
    from qdepth_bench.models.qdepth.model import Batch
    from qdepth_bench.models.vqvae import load_vqvae

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
    images = images_to_model(episode.images["main"][frames])
    tokens, mask = loaded.tokenizer([episode.instruction] * len(frames))
    state = torch.from_numpy(loaded.stats.normalize_state(episode.state[frames])).float()
    batch = Batch(images, torch.from_numpy(tokens), torch.from_numpy(mask), state)
    with torch.no_grad():
        predicted = vqvae.decode_codes(loaded.model.predict_depth_codes(batch)).clamp(0, 1).numpy()
    fig, axes = plt.subplots(3, len(frames), figsize=(2.4 * len(frames), 7.4), squeeze=False)
    for col, t in enumerate(frames):
        for row, (image, title) in enumerate(
            ((episode.images["main"][t], "RGB"), (truth[t], "ground truth"), (predicted[col], "prediction"))
        ):
            ax = axes[row][col]
            ax.imshow(image, cmap=None if row == 0 else "viridis", vmin=0, vmax=1 if row else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(title)
        axes[0][col].set_title(f"t = {t}")
    fig.suptitle(f"{episode.instruction} ({loaded.variant}, {checkpoint.name})", fontsize=9)
    return save_png(fig, out)

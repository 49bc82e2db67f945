"""`qdepth-bench train vqvae` and `qdepth-bench depth encode`: fit the depth VQ-VAE on annotated depth
frames (AdamW, lr 1e-4, paper 3.2), then turn every annotated frame into its 256 code indices."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import file_hash
from qdepth_bench.datasets import depth as depth_cache
from qdepth_bench.models.vqvae import DepthVQVAE, VQVAEConfig
from qdepth_bench.train.data import DepthFrames
from qdepth_bench.train.loop import MetricsLog
from qdepth_bench.train.recipe import Recipe

FIELDS = [
    "step",
    "lr",
    "loss",
    "reconstruction",
    "codebook",
    "commitment",
    "perplexity",
    "codes_used",
    "restarted",
    "frames_per_s",
]


def _batch(frames: DepthFrames, rng: np.random.Generator, size: int) -> torch.Tensor:
    return torch.from_numpy(frames.take(rng.integers(0, len(frames), size)).astype(np.float32) / 255.0)


def train_vqvae(recipe: Recipe, on_log: Callable[[dict], None] | None = None) -> Path:
    """Train on every annotated frame of the recipe's data; writes `<out>/model.safetensors`, config, metrics."""
    from safetensors.torch import save_file

    settings = recipe.train
    torch.manual_seed(settings.seed)
    frames = DepthFrames(recipe.data_paths())
    config = VQVAEConfig(**recipe.model.get("overrides", {}))
    if frames.size != config.image_size:
        raise UserError(f"depth frames are {frames.size} px but the VQ-VAE takes {config.image_size} px.")
    model = DepthVQVAE(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    log = MetricsLog(recipe.out, FIELDS)
    rng = np.random.default_rng(settings.seed)
    start = time.perf_counter()
    restarted = 0
    # an `epochs` recipe: batches drawn at random from every frame, epochs x frames samples in all
    steps = settings.steps or math.ceil(settings.epochs * len(frames) / settings.batch_size)
    for step in range(steps):
        out = model(_batch(frames, rng, settings.batch_size))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        restarted += model.restart_dead_codes(out["codes"], out["latents"])
        if step % settings.log_every == 0 or step == steps - 1:
            row = {
                "step": step,
                "lr": settings.lr,
                "restarted": restarted,
                "frames_per_s": round((step + 1) * settings.batch_size / (time.perf_counter() - start), 2),
                **{
                    k: round(float(out[k].detach()), 6)
                    for k in ("loss", "reconstruction", "codebook", "commitment", "perplexity", "codes_used")
                },
            }
            log.write(row)
            if on_log is not None:
                on_log(row)
    model.eval()
    with torch.no_grad():
        held = _batch(frames, np.random.default_rng(settings.seed + 1), min(256, len(frames)))
        final = model(held)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(recipe.out / "model.safetensors"))
    recorded = {"vqvae": config.to_dict(), "recipe": recipe.source, "steps": steps, "frames": int(len(frames))}
    (recipe.out / "config.json").write_text(json.dumps(recorded, indent=2))
    evaluation = {
        "frames": int(len(frames)),
        "reconstruction_mse": float(final["reconstruction"]),
        "perplexity": float(final["perplexity"]),
        "codes_used": int(final["codes_used"]),
        "codebook_size": config.codebook_size,
    }
    (recipe.out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    return recipe.out


def load_vqvae(folder: Path) -> tuple[DepthVQVAE, str]:
    """A trained VQ-VAE and the hash of its weights (recorded with the codes it makes)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise UserError(
            f"{folder} is not a trained VQ-VAE (model.safetensors + config.json); train one with "
            "`qdepth-bench train vqvae --recipe vqvae-libero-object`."
        )
    model = DepthVQVAE(VQVAEConfig(**json.loads((folder / "config.json").read_text())["vqvae"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), file_hash(folder / "model.safetensors")


@torch.no_grad()
def encode_dataset(dataset: Path, vqvae_folder: Path, batch: int = 64) -> int:
    """Write the code indices of every annotated frame into the dataset's depth cache; returns frames coded."""
    import h5py

    model, digest = load_vqvae(vqvae_folder)
    cache = depth_cache.cache_path(dataset)
    demos = sorted(depth_cache.done_demos(cache))
    if not demos:
        raise UserError(f"{dataset} has no depth annotation; run `qdepth-bench depth annotate {dataset}` first.")
    total = 0
    for demo in demos:
        with h5py.File(cache, "r") as f:
            if f[demo].attrs.get("vqvae") == digest and "codes" in f[demo]:
                continue
        relative = torch.from_numpy(depth_cache.read_relative(cache, demo))
        codes = torch.cat(
            [model.nearest(model.encode(relative[i : i + batch])) for i in range(0, len(relative), batch)]
        )
        depth_cache.write_codes(cache, demo, codes.numpy(), digest)
        total += len(codes)
    return total

"""Depth of a whole video with ViDA, the way its authors run it: overlapping windows, key frames carried
between windows, and each window's depth aligned in scale and shift to the one before.

A window holds WINDOW frames and advances by WINDOW - OVERLAP. The first OVERLAP input slots of a window are
not fresh frames but inputs of the previous window (slots KEYFRAMES of it): the video's first frame, a frame
from the middle of the previous window, and the OVERLAP - 2 frames both windows share. Because those inputs
are known before any depth is computed, all windows can run as one batch; only the alignment is sequential.
The alignment solves least squares for the scale and shift that map a window's depth at its first ALIGN
slots onto the aligned depth of the same inputs, then blends the INTERP shared frames linearly from the old
window to the new one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from qdepth_bench.models.vida.model import PATCH, VideoDepthAnything

WINDOW = 32
OVERLAP = 10
KEYFRAMES = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)
INTERP = 8
ALIGN = OVERLAP - INTERP  # slots of a window used to fit its scale and shift
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def input_shape(height: int, width: int, input_size: int = 518) -> tuple[int, int]:
    """The network's input size for a frame: the short side scaled to `input_size` (smaller for frames
    wider than 16:9, to bound memory), both sides rounded to multiples of 14."""
    ratio = max(height, width) / min(height, width)
    if ratio > 1.78:
        input_size = round(int(input_size * 1.777 / ratio) / PATCH) * PATCH
    scale = max(input_size / height, input_size / width)

    def multiple(x: float) -> int:
        y = int(np.round(x / PATCH) * PATCH)
        return y if y >= input_size else int(np.ceil(x / PATCH) * PATCH)

    return multiple(scale * height), multiple(scale * width)


def preprocess(frames: np.ndarray, input_size: int = 518) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, h, w) float32 normalised network input (bicubic resize). The
    normalisation runs in float64 and rounds once, as the reference's does."""
    height, width = input_shape(frames.shape[1], frames.shape[2], input_size)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    if (height, width) != x.shape[2:]:
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((x.double() - mean) / std).float().contiguous()  # channels-first memory, as the reference feeds it


def window_inputs(length: int) -> np.ndarray:
    """(windows, WINDOW) frame index of every input slot, for a video of `length` frames (the last frame
    repeats past the end)."""
    step = WINDOW - OVERLAP
    rows: list[np.ndarray] = []
    for start in range(0, length, step):
        row = np.minimum(np.arange(start, start + WINDOW), length - 1)
        if rows:
            row[:OVERLAP] = rows[-1][list(KEYFRAMES)]
        rows.append(row)
    return np.stack(rows)


def fit_scale_shift(prediction: np.ndarray, target: np.ndarray) -> tuple[np.float32, np.float32]:
    """Least-squares scale and shift with prediction * scale + shift ~ target (float32, like the reference);
    (1, 0) when the system is singular."""
    prediction = prediction.astype(np.float32)
    target = target.astype(np.float32)
    a_00, a_01 = np.sum(prediction * prediction), np.sum(prediction)
    a_11 = np.float32(prediction.size)
    b_0, b_1 = np.sum(prediction * target), np.sum(target)
    det = a_00 * a_11 - a_01 * a_01
    if det == 0:
        return np.float32(1), np.float32(0)
    return (a_11 * b_0 - a_01 * b_1) / det, (-a_01 * b_0 + a_00 * b_1) / det


def align_windows(windows: Iterator[np.ndarray], length: int, metric: bool = False) -> np.ndarray:
    """Join per-window depth (each (WINDOW, H, W), in window order) into (length, H, W)."""
    out: list[np.ndarray] = []
    reference: list[np.ndarray] = []
    step = 1.0 / (INTERP - 1)  # python floats, so that float32 frames stay float32
    weights = [0.0] + [i * step for i in range(1, INTERP - 1)] + [1.0]
    for depth in windows:
        if not out:
            out.extend(depth)
            reference = [depth[slot] for slot in KEYFRAMES[:ALIGN]]
            continue
        if metric:
            scale, shift = np.float32(1), np.float32(0)
        else:
            scale, shift = fit_scale_shift(np.concatenate(depth[:ALIGN]), np.concatenate(reference))
        aligned = np.maximum(depth * scale + shift, 0)
        for i, w in enumerate(weights):
            out[len(out) - INTERP + i] = out[len(out) - INTERP + i] * (1 - w) + aligned[ALIGN + i] * w
        out.extend(aligned[OVERLAP:])
        reference = reference[:1] + [aligned[slot] for slot in KEYFRAMES[1:ALIGN]]
    return np.stack(out[:length])


@torch.no_grad()
def infer_video(
    model: VideoDepthAnything,
    frames: np.ndarray,
    input_size: int = 518,
    batch_windows: int = 1,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames -> (T, H, W) float32 relative inverse depth, temporally consistent across
    the whole video. `batch_windows` windows run per forward pass; half precision on a GPU via `dtype`."""
    length, height, width = frames.shape[:3]
    slots = window_inputs(length)

    def depths() -> Iterator[np.ndarray]:
        for first in range(0, len(slots), batch_windows):
            index = slots[first : first + batch_windows]  # resized per batch: memory stays one batch deep
            batch = preprocess(frames[index.ravel()], input_size).unflatten(0, index.shape).to(device)
            with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
                depth = model(batch)
            depth = depth.float().flatten(0, 1).unsqueeze(1)
            depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=True)
            yield from depth.squeeze(1).unflatten(0, (-1, WINDOW)).cpu().numpy()

    return align_windows(depths(), length, metric=model.config.metric)

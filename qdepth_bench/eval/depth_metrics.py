"""Scoring a policy's depth predictions in closed loop (`run --depth-metrics`).

At every observed frame the simulator also renders the main camera's metric depth. It is made relative the way
the shipped models' training targets were (`datasets.depth.to_relative`, per frame: clipped to its 1st-99th
percentiles, scaled to [0, 1], quantised to uint8) and encoded by the policy's own VQ-VAE into the codes its
token head was trained to predict. Per frame:

- token accuracy: the share of the N positions whose most likely predicted code is the ground-truth code;
- top-5 accuracy: the share whose ground-truth code is among the 5 most likely;
- cross-entropy: the mean of -log p(ground-truth code) under the softmax of the logits (nats; chance: ln K);
- abs-rel: mean |d_pred - d| / d over pixels, d the simulator's depth in metres and d_pred the depth decoded
  from the predicted codes (a pixel head's own map), put back in metres with the frame's clip range. That range
  comes from the ground truth, so abs-rel scores the depth's shape, not its metric scale (which relative
  depth does not have).

Per episode each is the mean over its observed frames. Beside them the episode keeps the counts of its
ground-truth and predicted codes, overall and per position (what a predictor that ignores the frame would
score, and whether one code dominates), and the abs-rel of the VQ-VAE's own reconstruction of the ground truth
(the best any prediction of codes can do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.imaging import resize_bilinear
from qdepth_bench.core.policy import DepthCodec, DepthPrediction, Policy, no_depth_head
from qdepth_bench.datasets.depth import to_relative
from qdepth_bench.results.schema import DEPTH_COLUMNS

#: positions counted as "top-k" in the top-k accuracy
TOP_K = 5


@dataclass
class FrameDepth:
    """One observed frame's scores (None: not defined for the policy's kind of depth head)."""

    abs_rel: float
    token_accuracy: float | None = None
    top5_accuracy: float | None = None
    cross_entropy: float | None = None
    abs_rel_floor: float | None = None
    true_codes: np.ndarray | None = None
    predicted_codes: np.ndarray | None = None
    #: for the side-by-side video: the frame's relative ground truth and prediction, (H, W) in [0, 1]
    relative_true: np.ndarray | None = None
    relative_predicted: np.ndarray | None = None


def _abs_rel(relative: np.ndarray, metres: np.ndarray, lo: float, hi: float) -> float:
    predicted = lo + relative.astype(np.float64) * (hi - lo)
    valid = metres > 0
    return float(np.mean(np.abs(predicted[valid] - metres[valid]) / metres[valid]))


def score_frames(metres: np.ndarray, prediction: DepthPrediction, codec: DepthCodec | None) -> list[FrameDepth]:
    """Score B frames: `metres` (B, H, W) the simulator's depth, `prediction` the policy's for the same rows,
    `codec` its VQ-VAE (needed for a token head)."""
    quantised, ranges = to_relative(metres, inverse=False, normalisation="frame")
    relative = quantised.astype(np.float32) / 255.0
    if prediction.logits is None:
        predicted_relative = prediction.relative
        if predicted_relative is None:
            raise ValueError("the policy returned no depth prediction")
        return [
            FrameDepth(
                _abs_rel(predicted_relative[i], metres[i], *ranges[i]),
                relative_true=relative[i],
                relative_predicted=predicted_relative[i],
            )
            for i in range(len(metres))
        ]
    if codec is None:
        raise ValueError("scoring depth tokens needs the policy's VQ-VAE")
    logits = prediction.logits.astype(np.float64)
    true = codec.encode(relative)
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    true_log_p = np.take_along_axis(log_p, true[..., None], -1)[..., 0]
    # the ground truth's rank: how many codes the policy found more likely
    rank = (logits > np.take_along_axis(logits, true[..., None], -1)).sum(-1)
    predicted = logits.argmax(-1)
    decoded = codec.decode(np.concatenate([predicted, true]))
    b = len(metres)
    return [
        FrameDepth(
            abs_rel=_abs_rel(decoded[i], metres[i], *ranges[i]),
            token_accuracy=float(np.mean(predicted[i] == true[i])),
            top5_accuracy=float(np.mean(rank[i] < TOP_K)),
            cross_entropy=float(-true_log_p[i].mean()),
            abs_rel_floor=_abs_rel(decoded[b + i], metres[i], *ranges[i]),
            true_codes=true[i],
            predicted_codes=predicted[i],
            relative_true=relative[i],
            relative_predicted=decoded[i],
        )
        for i in range(b)
    ]


@dataclass
class EpisodeDepth:
    """One episode's frames' scores as they come; `summary` is what the store records."""

    codebook_size: int = 0
    keep_steps: bool = False
    frames: list[FrameDepth] = field(default_factory=list)
    true_counts: np.ndarray | None = None
    predicted_counts: np.ndarray | None = None
    #: (N, K): how often each ground-truth code occurred at each position
    position_counts: np.ndarray | None = None

    def add(self, frame: FrameDepth) -> None:
        """Count a frame's codes and keep its scores (its depth maps are the video's, not kept here)."""
        if frame.true_codes is not None and frame.predicted_codes is not None:
            size = self.codebook_size
            true = np.bincount(frame.true_codes, minlength=size)
            predicted = np.bincount(frame.predicted_codes, minlength=size)
            self.true_counts = true if self.true_counts is None else self.true_counts + true
            self.predicted_counts = predicted if self.predicted_counts is None else self.predicted_counts + predicted
            if self.position_counts is None:
                self.position_counts = np.zeros((len(frame.true_codes), size), np.int64)
            self.position_counts[np.arange(len(frame.true_codes)), frame.true_codes] += 1
        self.frames.append(
            FrameDepth(
                frame.abs_rel, frame.token_accuracy, frame.top5_accuracy, frame.cross_entropy, frame.abs_rel_floor
            )
        )

    def summary(self) -> dict[str, Any]:
        """The per-episode columns (`results.schema.DEPTH_COLUMNS`) and the detail kept as JSON: frames
        scored, the code counts, the VQ-VAE's own abs-rel, and with `keep_steps` every frame's scores."""

        def mean(name: str) -> float | None:
            values = [getattr(f, name) for f in self.frames if getattr(f, name) is not None]
            return float(np.mean(values)) if values else None

        detail: dict[str, Any] = {"frames": len(self.frames), "abs_rel_floor": mean("abs_rel_floor")}
        if self.true_counts is not None and self.predicted_counts is not None:
            detail["codebook_size"] = self.codebook_size
            detail["true_counts"] = sparse_counts(self.true_counts)
            detail["predicted_counts"] = sparse_counts(self.predicted_counts)
        if self.position_counts is not None:
            detail["position_counts"] = [sparse_counts(row) for row in self.position_counts]
        if self.keep_steps:
            names = ("token_accuracy", "top5_accuracy", "cross_entropy", "abs_rel")
            detail["steps"] = {n: [getattr(f, n) for f in self.frames] for n in names}
        values = [mean(n) for n in ("token_accuracy", "top5_accuracy", "cross_entropy", "abs_rel")]
        return {**dict(zip(DEPTH_COLUMNS, values, strict=True)), "depth_detail": detail}


def sparse_counts(counts: np.ndarray) -> dict[str, int]:
    """{code: count} of the codes that occurred (JSON keys are strings)."""
    return {str(code): int(counts[code]) for code in np.flatnonzero(counts)}


def side_by_side(camera: np.ndarray, frame: FrameDepth) -> np.ndarray:
    """One video frame: the camera as the policy saw it | the simulator's relative depth | the predicted
    depth (grey, near dark), each at the camera's size."""
    panels = [camera]
    for depth in (frame.relative_true, frame.relative_predicted):
        grey = np.zeros(camera.shape[:2], np.uint8) if depth is None else np.round(depth * 255).astype(np.uint8)
        if grey.shape != camera.shape[:2]:
            grey = resize_bilinear(grey, (camera.shape[1], camera.shape[0]))
        panels.append(np.repeat(grey[..., None], 3, axis=-1))
    return np.concatenate(panels, axis=1)


def check_depth_policy(policy: Policy, codec: DepthCodec | None) -> None:
    """Refuse, before any episode, a policy `--depth-metrics` cannot score: one without a depth head, or a
    token head without its VQ-VAE."""
    kind = policy.depth_output()
    if not kind:
        raise no_depth_head(policy.name)
    if kind == "tokens" and codec is None:
        raise UserError(f"policy {policy.name} predicts depth tokens: --depth-metrics needs its VQ-VAE (--vqvae).")

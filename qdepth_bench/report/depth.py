"""The depth report (`qdepth-bench depth-report RUN...`): how well a policy predicted depth during its
episodes (`run --depth-metrics`), and whether the episodes it succeeded in are those it predicted depth well in.

Per run and task: the mean depth-token accuracy over episodes with a 95% interval (normal, episodes as units),
top-5 accuracy, cross-entropy and abs-rel; the success rate of the episodes in the top and the bottom half by
token accuracy (Wilson intervals); the point-biserial correlation between an episode's token accuracy and its
success, with a 95% interval (Fisher's z) and a two-sided p-value (normal approximation of Fisher's z).

Two yardsticks are printed with every run, so the accuracies can be judged:
- chance: a policy guessing codes uniformly scores 1/K (1/256 for the paper's codebook), 5/K in the top 5,
  and a cross-entropy of ln K;
- the no-depth-expert controls, predictors that never look at the frame: one always names the most frequent
  ground-truth code of the task's episodes (the majority-code rate); the other names, at each position, the
  code most frequent there in the task's other episodes (the layout rate, leave one episode out: a fixed
  camera sees much the same scene in every frame, so this is the rate a depth head has to beat to show it
  reads the frame). The share of the policy's
  own predictions taken by its most frequent code says whether its accuracy comes from one code everywhere.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pandas as pd

from qdepth_bench.core.errors import UserError
from qdepth_bench.results.store import Store

Z95 = NormalDist().inv_cdf(0.975)


@dataclass
class Association:
    """Point-biserial correlation of token accuracy with success (1/0); None where it is undefined."""

    r: float | None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    why: str = ""


@dataclass
class DepthTask:
    """One task of one run: its scored episodes' depth figures and their relation to success."""

    task_id: int
    task_name: str
    episodes: int
    successes: int
    token_accuracy: float | None
    token_low: float | None
    token_high: float | None
    top5_accuracy: float | None
    cross_entropy: float | None
    abs_rel: float | None
    abs_rel_floor: float | None
    #: the no-depth-expert controls: the share of positions holding the most frequent ground-truth code, and
    #: the share holding the most frequent code of their own position (the scene's usual layout)
    majority_rate: float | None
    layout_rate: float | None
    #: the share of the policy's predictions taken by its own most frequent code
    predicted_mode_share: float | None
    top_half: tuple[int, int]  # (successes, episodes) of the better-predicted half
    bottom_half: tuple[int, int]
    association: Association


@dataclass
class DepthRunView:
    """The depth report of one run (`report.render.grid.depth_grid` prints it)."""

    run_id: str
    policy: str
    suite: str
    codebook_size: int | None
    tasks: list[DepthTask] = field(default_factory=list)
    #: the scored episodes (for the figure)
    episodes: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def title(self) -> str:
        return f"depth predictions of {self.policy} on {self.suite} (run {self.run_id})"

    def notes(self) -> list[str]:
        k = self.codebook_size
        chance = (
            f"chance: token accuracy 1/{k} = {100 / k:.2f}%, top-5 {500 / k:.2f}%, cross-entropy ln {k} = "
            f"{math.log(k):.2f} nats"
            if k
            else "a pixel head: no tokens, so only abs-rel applies"
        )
        return [
            chance,
            "no-depth-expert controls (predictors that never look at the frame): 'majority code' always names the "
            "task's most frequent ground-truth code; 'layout' names, at each of the N positions, the code most "
            "frequent there in the task's other episodes (the scene's usual depth); 'pred. mode' is the share of the "
            "policy's predictions that are its own most frequent code",
            "accuracy: mean over episodes with a 95% normal interval; halves: episodes split at the median token "
            "accuracy, success % with Wilson 95% intervals; r: point-biserial correlation of token accuracy and "
            "success, 95% interval and p-value from Fisher's z",
            "abs-rel: depth decoded from the predicted codes (a pixel head's own) against the simulator's, in "
            "metres through each frame's ground-truth clip range; 'VQ-VAE floor': the same for the VQ-VAE's own "
            "reconstruction of the ground truth",
        ]


def point_biserial(accuracy: list[float], success: list[int]) -> Association:
    """Pearson's r between a continuous score and a 0/1 outcome, with Fisher-z interval and p-value."""
    n = len(accuracy)
    if n < 4:
        return Association(None, why=f"{n} episodes")
    if len(set(success)) < 2:
        return Association(None, why="every episode " + ("succeeded" if success[0] else "failed"))
    mean_a, mean_s = sum(accuracy) / n, sum(success) / n
    cov = sum((a - mean_a) * (s - mean_s) for a, s in zip(accuracy, success, strict=True))
    var_a = sum((a - mean_a) ** 2 for a in accuracy)
    var_s = sum((s - mean_s) ** 2 for s in success)
    if var_a == 0:
        return Association(None, why="token accuracy is the same in every episode")
    r = max(-0.999999, min(0.999999, cov / math.sqrt(var_a * var_s)))
    z, se = math.atanh(r), 1 / math.sqrt(n - 3)
    p = 2 * (1 - NormalDist().cdf(abs(z) / se))
    return Association(r, math.tanh(z - Z95 * se), math.tanh(z + Z95 * se), p)


def _mean_interval(values: pd.Series) -> tuple[float | None, float | None, float | None]:
    values = values.dropna().astype(float)
    if values.empty:
        return None, None, None
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None, None
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _counts(details: list[dict[str, Any]], key: str) -> Counter[str]:
    total: Counter[str] = Counter()
    for detail in details:
        total.update(detail.get(key, {}))
    return total


def _share_of_mode(counts: Counter[str]) -> float | None:
    total = sum(counts.values())
    return max(counts.values()) / total if total else None


def _layout_rate(details: list[dict[str, Any]]) -> float | None:
    """What naming, at each position, the code most frequent there would score, each episode scored by the
    codes of the task's other episodes (leave one out, so the control is not fitted on what it predicts);
    None below two episodes."""
    positions = [d["position_counts"] for d in details if "position_counts" in d]
    if len(positions) < 2:
        return None
    hits = total = 0
    for index in range(len(positions[0])):
        counts = [Counter(episode[index]) for episode in positions]
        pooled = sum(counts, Counter())
        for mine in counts:
            others = pooled - mine
            if others:
                hits += mine[others.most_common(1)[0][0]]
            total += sum(mine.values())
    return hits / total if total else None


def _task(episodes: pd.DataFrame) -> DepthTask:
    details = [json.loads(d) for d in episodes["depth_detail"]]
    accuracy, low, high = _mean_interval(episodes["depth_token_accuracy"])
    success = [int(s == "success") for s in episodes["status"]]
    floors = [d["abs_rel_floor"] for d in details if d.get("abs_rel_floor") is not None]
    halves: list[tuple[int, int]] = [(0, 0), (0, 0)]
    association = Association(None, why="no token accuracy (a pixel head)")
    if accuracy is not None:
        ranked = episodes.sort_values("depth_token_accuracy", ascending=False, kind="stable")
        half = len(ranked) // 2
        for index, part in enumerate((ranked.iloc[: len(ranked) - half], ranked.iloc[len(ranked) - half :])):
            halves[index] = (int((part["status"] == "success").sum()), len(part))
        association = point_biserial([float(a) for a in episodes["depth_token_accuracy"]], success)
    return DepthTask(
        task_id=int(episodes["task_id"].iloc[0]),
        task_name=str(episodes["task_name"].iloc[0]),
        episodes=len(episodes),
        successes=sum(success),
        token_accuracy=accuracy,
        token_low=low,
        token_high=high,
        top5_accuracy=_mean_interval(episodes["depth_top5_accuracy"])[0],
        cross_entropy=_mean_interval(episodes["depth_cross_entropy"])[0],
        abs_rel=_mean_interval(episodes["depth_abs_rel"])[0],
        abs_rel_floor=sum(floors) / len(floors) if floors else None,
        majority_rate=_share_of_mode(_counts(details, "true_counts")),
        layout_rate=_layout_rate(details),
        predicted_mode_share=_share_of_mode(_counts(details, "predicted_counts")),
        top_half=halves[0],
        bottom_half=halves[1],
        association=association,
    )


def depth_views(store: Store, run_ids: list[str]) -> list[DepthRunView]:
    """One view per run; a run recorded without `--depth-metrics` is refused in one line."""
    views = []
    for given in run_ids:
        run = store.run(given)
        frame = store.episodes_frame([run["run_id"]])
        scored = frame[(frame["status"] != "error") & frame["depth_detail"].notna()]
        if scored.empty:
            raise UserError(
                f"run {run['run_id']} has no depth scores; record them with `qdepth-bench run ... --depth-metrics`."
            )
        sizes = {json.loads(d).get("codebook_size") for d in scored["depth_detail"]}
        size = max((s for s in sizes if s), default=None)
        tasks = [_task(part) for _, part in scored.groupby("task_id", sort=True)]
        view = DepthRunView(run["run_id"], run["policy_name"], run["suite"], size, tasks, scored)
        views.append(view)
    return views


def depth_figure(view: DepthRunView, out: Path) -> Path:
    """Each episode's token accuracy (abs-rel for a pixel head) by outcome, per task: failures left, successes
    right, the task's mean with its 95% interval between them, chance and the no-depth-expert control marked
    (matplotlib, PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from qdepth_bench.report.figures import save_png

    tokens = view.codebook_size is not None
    column, scale = ("depth_token_accuracy", 100.0) if tokens else ("depth_abs_rel", 1.0)
    fig, ax = plt.subplots(figsize=(max(5.0, 2.4 * len(view.tasks)), 4))
    jitter = np.random.default_rng(0)
    for x, task in enumerate(view.tasks):
        mine = view.episodes[view.episodes["task_id"] == task.task_id]
        for offset, outcome, colour in ((-0.2, "failure", "tab:red"), (0.2, "success", "tab:green")):
            values = scale * mine.loc[mine["status"] == outcome, column].astype(float)
            where = x + offset + jitter.uniform(-0.06, 0.06, len(values))
            ax.scatter(where, values, s=10, color=colour, alpha=0.6, label=outcome if x == 0 else None)
        if tokens and task.token_accuracy is not None:
            low, high = task.token_low or task.token_accuracy, task.token_high or task.token_accuracy
            spread = [[scale * (task.token_accuracy - low)], [scale * (high - task.token_accuracy)]]
            ax.errorbar([x], [scale * task.token_accuracy], yerr=spread, fmt="_", color="black", capsize=6)
        for rate, colour in ((task.majority_rate, "tab:orange"), (task.layout_rate, "tab:blue")):
            if tokens and rate is not None:
                ax.hlines(scale * rate, x - 0.4, x + 0.4, colors=colour, linestyles="dashed")
    ax.set_xticks(range(len(view.tasks)), [f"task {t.task_id}" for t in view.tasks])
    if tokens and view.codebook_size:
        ax.axhline(100 / view.codebook_size, color="grey", linestyle="dotted", label=f"chance 1/{view.codebook_size}")
        ax.plot([], [], color="tab:orange", linestyle="dashed", label="majority code (no depth expert)")
        ax.plot([], [], color="tab:blue", linestyle="dashed", label="per-position layout (no depth expert)")
    ax.set_ylabel("depth-token accuracy % per episode" if tokens else "abs-rel per episode")
    ax.set_title(f"depth predictions of {view.policy} on {view.suite}\n(run {view.run_id})", fontsize=9)
    ax.legend(fontsize=7)
    return save_png(fig, out)

"""`run --depth-metrics`, the depth report and the depth column of the ablation report: real LIBERO episodes of the
shipped tiny QDepth-VLA (training seed 1, whose VQ-VAE ships in results/training/), real SQLite, the real CLI."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows

from qdepth_bench.core.policy import DepthPrediction
from qdepth_bench.eval.depth_metrics import EpisodeDepth, score_frames
from qdepth_bench.report.depth import point_biserial

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "qdepth_bench" / "content" / "policies" / "checkpoints"
SEED1 = CHECKPOINTS / "qdepth-tiny-libero-object-seed1"
VQVAE = ROOT / "results" / "training" / "vqvae-libero-object"


class GridCodec:
    """A stand-in VQ-VAE: code = the mean depth of a 4x4 patch quantised to 8 levels (16 codes per frame)."""

    codebook_size = 8

    def encode(self, relative: np.ndarray) -> np.ndarray:
        b, h, w = relative.shape
        patches = relative.reshape(b, 4, h // 4, 4, w // 4).mean(axis=(2, 4)).reshape(b, 16)
        return np.minimum((patches * 8).astype(np.int64), 7)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        levels = (codes.reshape(-1, 4, 4) + 0.5) / 8
        return np.kron(levels, np.ones((8, 8)))


def test_scores_of_a_perfect_and_a_uniform_prediction():
    rng = np.random.default_rng(0)
    metres = rng.uniform(0.5, 2.0, (2, 32, 32)).astype(np.float32)
    codec = GridCodec()
    from qdepth_bench.datasets.depth import to_relative

    true = codec.encode(to_relative(metres, False, "frame")[0].astype(np.float32) / 255)
    perfect = np.full((2, 16, 8), -20.0, np.float32)
    np.put_along_axis(perfect, true[..., None], 20.0, -1)
    frames = score_frames(metres, DepthPrediction(logits=perfect), codec)
    assert [f.token_accuracy for f in frames] == [1.0, 1.0]
    assert all(f.top5_accuracy == 1.0 and f.cross_entropy < 1e-6 for f in frames)
    assert all(f.abs_rel == pytest.approx(f.abs_rel_floor) for f in frames)  # the prediction is the VQ-VAE's own
    uniform = score_frames(metres, DepthPrediction(logits=np.zeros((2, 16, 8), np.float32)), codec)
    assert all(f.cross_entropy == pytest.approx(math.log(8)) and f.top5_accuracy == 1.0 for f in uniform)

    episode = EpisodeDepth(8, keep_steps=True)
    for frame in frames + uniform:
        episode.add(frame)
    summary = episode.summary()
    assert summary["depth_top5_accuracy"] == 1.0
    detail = summary["depth_detail"]
    assert detail["frames"] == 4 and len(detail["steps"]["token_accuracy"]) == 4
    assert sum(detail["true_counts"].values()) == 4 * 16 and len(detail["position_counts"]) == 16


def test_pixel_prediction_scores_abs_rel_only():
    metres = np.full((1, 16, 16), 2.0, np.float32)
    metres[0, :, 8:] = 1.0  # far left half, near right half
    prediction = DepthPrediction(relative=np.where(np.arange(16) < 8, 1.0, 0.0)[None, None].repeat(16, 1))
    (frame,) = score_frames(metres, prediction, None)
    assert frame.token_accuracy is None and frame.abs_rel == pytest.approx(0.0, abs=1e-6)


def test_the_layout_control_scores_each_episode_by_the_others():
    from qdepth_bench.report.depth import _layout_rate

    same = {"position_counts": [{"3": 2}, {"5": 2}]}
    assert _layout_rate([same]) is None
    assert _layout_rate([same, same, same]) == 1.0
    other = {"position_counts": [{"4": 2}, {"5": 2}]}
    # each `same` episode is scored by the mode of the others (3 at position 0: hit), `other` by 3 (miss at 0)
    assert _layout_rate([same, same, other]) == pytest.approx(10 / 12)


def test_point_biserial_matches_pearson_and_says_why_it_is_undefined():
    rng = np.random.default_rng(1)
    accuracy = rng.uniform(0, 1, 60)
    success = (accuracy + rng.normal(0, 0.3, 60) > 0.5).astype(int)
    found = point_biserial(list(accuracy), list(success))
    assert found.r == pytest.approx(np.corrcoef(accuracy, success)[0, 1])
    assert found.low < found.r < found.high and 0 <= found.p_value < 0.01
    assert point_biserial([0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0]).why == "every episode failed"


def _episodes(db: Path, run_id: str) -> list[tuple]:
    return db_rows(
        db,
        "select task_id, episode_index, status, steps, depth_token_accuracy, depth_top5_accuracy, "
        "depth_cross_entropy, depth_abs_rel, depth_detail from episodes where run_id = ? order by task_id, "
        "episode_index",
        (run_id,),
    )


@pytest.mark.slow
def test_depth_metrics_on_the_shipped_tiny_qdepth(cli, db_path, tmp_path):
    """Every episode is scored; outcomes and steps are those of the same episodes run without scoring; the run
    is its own (same protocol hash); depth-report and the ablation report read it."""
    common = ["run", "libero_object", "--policy", "qdepth", "--checkpoint", str(SEED1), "--tasks", "0,3"]
    common += ["--episodes", "1", "--max-steps", "24", "--workers", "2"]
    plain = cli(*common)
    assert plain.exit_code == 0, plain.output
    scored = cli(*common, "--depth-metrics", "--vqvae", str(VQVAE), "--depth-steps")
    assert scored.exit_code == 0, scored.output
    runs = db_rows(db_path, "select run_id, protocol_hash, depth_metrics from runs order by depth_metrics")
    assert len(runs) == 2 and runs[0][1] == runs[1][1] and [r[2] for r in runs] == [0, 1]
    without, with_depth = _episodes(db_path, runs[0][0]), _episodes(db_path, runs[1][0])
    assert [e[:4] for e in without] == [e[:4] for e in with_depth] and len(with_depth) == 2
    assert all(e[4] is None and e[8] is None for e in without)
    for episode in with_depth:
        accuracy, top5, cross_entropy, abs_rel = episode[4:8]
        assert 0 <= accuracy <= top5 <= 1 and cross_entropy > 0 and 0 < abs_rel < 1
        detail = json.loads(episode[8])
        assert detail["frames"] == len(detail["steps"]["token_accuracy"]) == 24 // 4
        assert detail["codebook_size"] == 256 and 0 < detail["abs_rel_floor"] < 1

    report = cli("depth-report", runs[1][0], "--format", "markdown", "--figures", str(tmp_path / "figures"))
    assert report.exit_code == 0, report.output
    assert "1/256 = 0.39%" in report.output and "layout %" in report.output
    assert (tmp_path / "figures" / f"depth-{runs[1][0]}.png").stat().st_size > 0
    refused = cli("depth-report", runs[0][0])
    assert refused.exit_code == 2 and "has no depth scores" in refused.output
    ablation = cli("ablation", "libero-object-tiny", "--format", "csv", "--no-reference")
    assert ablation.exit_code == 0, ablation.output
    assert "depth_token_accuracy" in ablation.output


def test_a_policy_without_depth_head_is_refused_in_one_line(cli, db_path):
    result = cli(
        "run",
        "libero_object",
        "--policy",
        "pi0",
        "--tasks",
        "0",
        "--episodes",
        "1",
        "--workers",
        "1",
        "--depth-metrics",
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: policy pi0 has no depth head, so --depth-metrics has nothing to score; drop --depth-metrics or "
        "evaluate a policy that predicts depth (e.g. qdepth)."
    ]
    assert not db_path.exists() or not db_rows(db_path, "select count(*) from episodes")[0][0]


def test_a_vqvae_that_is_not_the_policys_own_is_refused(cli):
    """The shipped seed-0 model was trained with a VQ-VAE that no longer exists: its codebook differs."""
    result = cli(
        "run",
        "libero_object",
        "--policy",
        "qdepth",
        "--tasks",
        "0",
        "--episodes",
        "1",
        "--workers",
        "1",
        "--depth-metrics",
        "--vqvae",
        str(VQVAE),
    )
    assert result.exit_code == 2 and "is not this policy's own VQ-VAE" in result.output


def test_the_policy_server_returns_depth_logits_when_asked():
    from qdepth_bench.core.policy import TaskInfo
    from qdepth_bench.registry.policies import make_policy
    from qdepth_bench.remote.server import PolicyServer
    from qdepth_bench.remote.wire import BATCH_KEY

    policy = make_policy("qdepth", {"checkpoint": str(SEED1)})
    task = TaskInfo("libero_object", 0, "t", "pick up the soup", "panda", (-1.0,) * 7, (1.0,) * 7, (0.0,) * 7, "x")
    server = PolicyServer(policy, task)
    assert server.metadata()["depth_output"] == "tokens"
    request = {
        BATCH_KEY: 1,
        "keys": ["k"],
        "images/main": np.zeros((1, 224, 224, 3), np.uint8),
        "state": np.zeros((1, 8)),
        "instructions": ["pick up the soup"],
        "resets": [{"key": "k", "seed": 3, "task": task.__dict__}],
    }
    plain = server.infer(dict(request), 0, set())
    scored = server.infer({**request, "depth": 1, "resets": [{"key": "k", "seed": 3, "task": task.__dict__}]}, 0, set())
    assert "depth_logits" not in plain and scored["depth_logits"].shape == (1, 256, 256)
    np.testing.assert_array_equal(plain["actions"], scored["actions"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mani_skill") is None, reason="mani-skill is not installed")
def test_maniskill3_renders_the_main_camera_depth_at_observed_frames_only():
    from qdepth_bench.core.policy import PolicyRequirements
    from qdepth_bench.registry.sims import make_backend
    from qdepth_bench.registry.suites import suite_registry

    spec = suite_registry().resolve("simpler_widowx")[0].with_backend("maniskill3").with_overrides({"stand_ins": True})
    backend = make_backend(spec)
    env = backend.make_env(0, PolicyRequirements(depth=True))
    try:
        first = env.reset(backend.episodes([0], 1, 7)[0])
        depth = first.depth["main"]
        assert depth.shape == (1, 224, 224) and depth.dtype == np.float32
        assert 0.2 < float(np.median(depth)) < 2.0  # metres: the table in front of the camera
        assert env.step(np.zeros(7), observe=False).observation is None
        assert env.step(np.zeros(7)).observation.depth["main"].shape == (1, 224, 224)
    finally:
        env.close()

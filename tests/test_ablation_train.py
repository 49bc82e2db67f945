"""`ablation --train --run` end to end through the CLI on a miniature ablation: two variants trained from
recipes (one extending the other) on a LIBERO demo file recorded here, evaluated on one real LIBERO episode each,
killed mid-training and resumed to the same table as an uninterrupted run."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli_subprocess
from test_training import record_demos

STEPS = 40


def mini_content(root: Path, demo_file: Path) -> Path:
    """A content root with two recipes and an ablation of two variants over them."""
    (root / "training").mkdir(parents=True)
    (root / "ablations").mkdir()
    base = {
        "name": "mini-pixel",
        "kind": "policy",
        "out": "runs/mini-pixel",
        "model": {"size": "tiny", "variant": "qdepth-pixel", "overrides": {"chunk_size": 4}},
        "data": {"format": "libero_hdf5", "paths": [str(demo_file)]},
        "train": {
            "steps": STEPS,
            "batch_size": 2,
            "lr": 1e-3,
            "warmup_steps": 2,
            "log_every": 1,
            "checkpoint_every": 5,
        },
    }
    (root / "training" / "mini-pixel.yaml").write_text(json.dumps(base))
    (root / "training" / "mini-pi0.yaml").write_text(
        "extends: mini-pixel\nname: mini-pi0\nout: runs/mini-pi0\nmodel: {variant: pi0}\ntrain: {steps: 3}\n"
    )
    (root / "ablations" / "mini.yaml").write_text(
        "id: mini\ntitle: mini ablation\nsuite: libero_object\ncolumns: {T0: '0'}\nepisodes: 1\n"
        "components: [Depth]\nfull: qdepth-pixel\nvariants:\n"
        "  - {policy: qdepth-pixel, label: full, removes: [], recipe: mini-pixel, checkpoint: ckpt/mini-pixel}\n"
        "  - {policy: pi0, label: no depth, removes: [Depth], recipe: mini-pi0, checkpoint: ckpt/mini-pi0}\n"
    )
    return root


def ablation_command(db: Path, *extra: str) -> list[str]:
    return ["ablation", "mini", "--train", "--run", "--workers", "1", "--format", "csv", "--db", str(db), *extra]


def table(stdout: str) -> list[dict[str, str]]:
    return [r for r in csv.DictReader(io.StringIO(stdout)) if r["source"] == "ours"]


@pytest.mark.slow
def test_ablation_trains_runs_survives_a_kill_and_resumes_to_the_same_table(tmp_path):
    demo_file = record_demos(tmp_path / "task0_demo.hdf5", n_demos=2, steps=12)
    annotate = run_cli_subprocess("depth", "annotate", str(demo_file), cwd=tmp_path)  # the pixel variant's targets
    assert annotate.returncode == 0, annotate.stderr
    tables, weights = {}, {}
    for case in ("killed", "straight"):
        work = tmp_path / case
        content = mini_content(work / "content", demo_file)
        env = {"QDEPTH_BENCH_CONTENT": str(content)}
        db = work / "results.sqlite"
        if case == "killed":
            exe = Path(sys.executable).with_name("qdepth-bench")
            process = subprocess.Popen(
                [str(exe), *ablation_command(db)],
                cwd=work,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            state = work / "runs" / "mini-pixel" / "checkpoint" / "trainer.json"
            deadline = time.monotonic() + 600
            while not state.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert process.poll() is None, "the training ended before it could be killed"
            process.send_signal(signal.SIGKILL)  # as a machine that stops: no handler runs
            process.wait()
            assert not (content / "ckpt" / "mini-pixel").exists()  # an unfinished training is not installed
            resumed = run_cli_subprocess(*ablation_command(db), cwd=work, env=env)
            assert resumed.returncode == 0, resumed.stderr
            assert "to train: mini-pixel from step" in resumed.stderr  # the plan says where it continues
            assert "[train 1/2] qdepth-pixel seed 0" in resumed.stderr and "[run 2/2] pi0 seed 0" in resumed.stderr
            tables[case] = table(resumed.stdout)
        else:
            result = run_cli_subprocess(*ablation_command(db), cwd=work, env=env)
            assert result.returncode == 0, result.stderr
            tables[case] = table(result.stdout)
        # the training log has every step once, also across the kill
        log = list(csv.DictReader((work / "runs" / "mini-pixel" / "log.csv").open()))
        assert [int(r["step"]) for r in log] == list(range(STEPS))
        installed = json.loads((content / "ckpt" / "mini-pi0" / "config.json").read_text())
        assert installed["variant"] == "pi0" and installed["recipe"]["train"]["steps"] == 3  # extends, then overrides
        assert installed["recipe"]["data"]["paths"] == [str(demo_file)]  # the same data as the recipe it extends
        assert not (content / "ckpt" / "mini-pi0" / "trainer.json").exists()  # the policy folder alone
        weights[case] = (content / "ckpt" / "mini-pixel" / "model.safetensors").read_bytes()
    assert weights["killed"] == weights["straight"]  # the resumed training is the uninterrupted one, bit for bit
    assert tables["killed"] == tables["straight"]
    rows = {r["variant"]: r for r in tables["killed"]}
    assert set(rows) == {"full", "no depth"}
    assert rows["full"]["T0 n"] == "1" and rows["no depth"]["T0 n"] == "1"
    assert rows["no depth"]["seeds"].startswith("0:") and rows["no depth"]["discordant"] != ""

    # everything done: the same command trains and runs nothing more
    again = run_cli_subprocess(
        *ablation_command(tmp_path / "killed" / "results.sqlite"),
        cwd=tmp_path / "killed",
        env={"QDEPTH_BENCH_CONTENT": str(tmp_path / "killed" / "content")},
    )
    assert again.returncode == 0, again.stderr
    assert "[train" not in again.stderr and "1 episodes (1 already recorded)" in again.stderr
    assert table(again.stdout) == tables["killed"]


def test_seeded_and_extending_recipes(tmp_path, monkeypatch):
    from qdepth_bench.core.errors import UserError
    from qdepth_bench.train.recipe import load_recipe

    root = mini_content(tmp_path / "content", tmp_path / "demo.hdf5")
    monkeypatch.setenv("QDEPTH_BENCH_CONTENT", str(root))
    pi0 = load_recipe("mini-pi0")
    assert pi0.model["variant"] == "pi0" and pi0.model["size"] == "tiny" and pi0.train.steps == 3
    assert pi0.train.batch_size == 2 and "extends" not in pi0.source
    seeded = load_recipe("mini-pi0", seed=2)
    assert seeded.train.seed == 2 and str(seeded.out) == "runs/mini-pi0-seed2" and seeded.source["train"]["seed"] == 2
    assert load_recipe("mini-pi0", seed=0).source == pi0.source  # seed 0 is the recipe as written
    (root / "training" / "loop.yaml").write_text("extends: loop\nname: loop\n")
    with pytest.raises(UserError, match="loops back"):
        load_recipe("loop")


def test_ablation_members_and_checkpoint_folders(tmp_path, monkeypatch):
    from qdepth_bench.registry.ablations import ablation_registry, ablation_spec

    root = mini_content(tmp_path / "content", tmp_path / "demo.hdf5")
    monkeypatch.setenv("QDEPTH_BENCH_CONTENT", str(root))
    ablation_registry.cache_clear()
    try:
        spec = ablation_spec("mini")
        members = spec.members(seeds=2)
        assert [(m.variant.policy, m.seed) for m in members] == [
            ("qdepth-pixel", 0),
            ("qdepth-pixel", 1),
            ("pi0", 0),
            ("pi0", 1),
        ]
        assert members[0].checkpoint == root / "ckpt" / "mini-pixel"
        assert members[1].checkpoint == root / "ckpt" / "mini-pixel-seed1"
        assert not any(m.trained for m in members) and spec.task_ids == "0" and spec.episodes == 1
        shipped = ablation_spec("libero-object-tiny")
        assert {m.variant.policy for m in shipped.members()} == {
            "qdepth",
            "qdepth-no-depth-loss",
            "qdepth-no-depth-expert",
            "qdepth-pixel",
            "qdepth-causal",
            "pi0",
        }
        assert sum(m.variant.policy == "qdepth" for m in shipped.members()) == 3
    finally:
        ablation_registry.cache_clear()


def test_data_fingerprint_and_the_ablation_note_on_different_data(tmp_path):
    from qdepth_bench.datasets.episode import Episode, data_fingerprint
    from qdepth_bench.registry.ablations import Member, Variant
    from qdepth_bench.report.ablation import data_notes

    def episode(action: float) -> Episode:
        return Episode("pick", {"main": np.zeros((2, 4, 4, 3), np.uint8)}, np.zeros((2, 8)), np.full((2, 7), action))

    assert data_fingerprint([episode(0.0)]) == data_fingerprint([episode(0.0)])
    assert data_fingerprint([episode(0.0)]) != data_fingerprint([episode(1e-9)])
    members = []
    for name, data in (("a", "1111"), ("b", "1111"), ("c", "2222"), ("d", None)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"data_hash": data} if data else {}))
        members.append(Member(Variant(name, name), 0, folder))
    assert data_notes(members[:2]) == []
    different, unrecorded = data_notes(members)
    assert "data 1111: a seed 0, b seed 0; data 2222: c seed 0" in different
    assert unrecorded.startswith("no data fingerprint recorded with d seed 0")


def test_deltas_and_detectable_changes_use_the_seeds_the_paired_test_uses():
    from qdepth_bench.registry.ablations import AblationSpec, Variant
    from qdepth_bench.report.ablation import AblationRow, AblationView, SeedResult, _with_matched_deltas
    from qdepth_bench.report.cells import Cell
    from qdepth_bench.report.stats import detectable_change

    full, one_seed, three_seeds = Variant("full", "full"), Variant("one", "one"), Variant("three", "three")
    spec = AblationSpec("t", "t", "libero_object", {"T0": "0"}, (), "full", (full, one_seed, three_seeds))

    def row(variant: Variant, rates: dict[int, float], pairs: int) -> AblationRow:
        seeds = [SeedResult(s, Cell(r), p_value=None if variant is full else 0.5) for s, r in rates.items()]
        return AblationRow(variant, {}, Cell(sum(rates.values()) / len(rates)), seeds=seeds, pairs=pairs)

    rows = [
        row(full, {0: 18.0, 1: 1.0, 2: 5.0}, 0),
        row(one_seed, {0: 24.0}, 100),
        row(three_seeds, {0: 4, 1: 2, 2: 3}, 300),
    ]
    view = AblationView(spec, "ours", _with_matched_deltas(spec, rows))
    # a one-seed variant against the full model's seed 0 (18), not against the mean of its three seeds (8)
    assert [r.delta for r in view.rows] == [0.0, 6.0, pytest.approx(3.0 - 8.0)]
    one, three = view.detectable()
    low, high = detectable_change(0.18, 100)
    assert one.startswith(f"detectable with 100 paired episodes (seed 0): a drop to {100 * low:.1f}%")
    assert f"a rise to {100 * high:.1f}% from the full model's 18.0%" in one
    assert three.startswith("detectable with 300 paired episodes (seeds 0, 1, 2)") and "full model's 8.0%" in three


def test_paired_test_text_never_prints_a_zero_p_value():
    from qdepth_bench.report.render.grid import _paired_text
    from qdepth_bench.report.stats import mcnemar_exact

    assert _paired_text(mcnemar_exact(1, 20), (1, 20)) == "p<0.001 (1/20)"
    assert _paired_text(mcnemar_exact(18, 4), (18, 4)) == "p=0.004 (18/4)"
    assert _paired_text(None, None) == ""

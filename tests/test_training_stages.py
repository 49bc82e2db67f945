"""Training in stages (`train.stages`): a recipe counted in epochs, a second stage that starts from the first
one's weights (weights only: a fresh optimizer and schedule, from step 0), its refusals, its resume, the
lineage both stages leave in the checkpoint and `runs show`, and the check that `ablation table6 --train`
makes before any work on a machine without the paper's inputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import db_rows, run_cli_subprocess
from test_data_pipeline import libero_file

from qdepth_bench.registry.content import CONTENT_ENV

LENGTHS = (5, 6, 7)  # 18 frames an epoch


def stage_content(tmp_path: Path) -> Path:
    """A content root with stage `first` (2 epochs, from scratch) and stage `second` (2 steps on other data,
    init_from `first`), and `wider`, whose model is not `first`'s."""
    root = tmp_path / "content"
    (root / "training").mkdir(parents=True)
    first_data = libero_file(tmp_path / "first_demo.hdf5", LENGTHS, seed=0)
    second_data = libero_file(tmp_path / "second_demo.hdf5", LENGTHS, seed=1)
    first = {
        "name": "first",
        "kind": "policy",
        "out": str(tmp_path / "runs" / "first"),
        "model": {"size": "tiny", "variant": "pi0", "overrides": {"chunk_size": 2}},
        "data": {"format": "libero_hdf5", "paths": [str(first_data)], "shuffle_buffer": 4},
        "train": {"epochs": 2, "batch_size": 3, "global_batch": 6, "lr": 1e-3, "warmup_steps": 2, "log_every": 1},
    }
    second = {
        "extends": "first",
        "name": "second",
        "init_from": "first",
        "out": str(tmp_path / "runs" / "second"),
        "data": {"paths": [str(second_data)]},
        "train": {"steps": 2, "checkpoint_every": 1, "warmup_steps": 4},
    }
    wider = {
        **second,
        "name": "wider",
        "out": str(tmp_path / "runs" / "wider"),
        "model": {"overrides": {"chunk_size": 3}},
    }
    for recipe in (first, second, wider):
        (root / "training" / f"{recipe['name']}.yaml").write_text(json.dumps(recipe))
    return root


def log_rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "log.csv").open()))


def test_epochs_init_from_resume_and_lineage(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from qdepth_bench.core.lineage import lineage_summary, read_lineage
    from qdepth_bench.train.policy import train_policy
    from qdepth_bench.train.recipe import load_recipe

    root = stage_content(tmp_path)
    monkeypatch.setenv(CONTENT_ENV, str(root))
    env = {CONTENT_ENV: str(root)}
    runs = tmp_path / "runs"

    # the second stage before the first: one line naming the command that makes its source
    early = run_cli_subprocess("train", "policy", "--recipe", "second", cwd=tmp_path, env=env)
    assert early.returncode == 2 and len(early.stderr.strip().splitlines()) == 1, early.stderr
    assert "`qdepth-bench train policy --recipe first`" in early.stderr

    # epochs -> steps: 2 epochs of 18 frames at a global batch of 6 are 6 steps, recorded with the schedule
    first = train_policy(load_recipe("first"))
    assert [int(r["step"]) for r in log_rows(runs / "first")] == list(range(6))
    config = json.loads((first / "config.json").read_text())
    assert config["schedule"] == {"epochs": 2.0, "epoch_frames": 18, "global_batch": 6, "steps": 6}
    assert config["step"] == 6

    # weights only: with lr 0 the second stage's weights stay the first's exactly, and it starts at step 0
    frozen = load_recipe("second", {"train.lr": 0, "out": str(runs / "frozen")})
    frozen_policy = train_policy(frozen)
    theirs, ours = load_file(str(first / "model.safetensors")), load_file(str(frozen_policy / "model.safetensors"))
    assert theirs.keys() == ours.keys() and all(theirs[k].equal(ours[k]) for k in theirs)
    assert [int(r["step"]) for r in log_rows(runs / "frozen")] == [0, 1]

    # through the CLI: one step, then a resume that needs only its own checkpoint (the source moved away)
    part = run_cli_subprocess("train", "policy", "--recipe", "second", "--set", "train.steps=1", cwd=tmp_path, env=env)
    assert part.returncode == 0, part.stderr
    row = log_rows(runs / "second")[0]
    assert row["step"] == "0" and float(row["lr"]) == pytest.approx(1e-3 * 2 / 4)  # a fresh schedule: warm-up 2 of 4
    shutil.move(runs / "first", tmp_path / "moved")
    resumed = run_cli_subprocess("train", "policy", "--recipe", "second", "--resume", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r["step"]) for r in log_rows(runs / "second")] == [0, 1]
    lineage = read_lineage(runs / "second" / "policy")
    assert lineage is not None and [s["recipe"] for s in lineage] == ["first", "second"]
    assert lineage[1]["init_from"]["path"] == str(runs / "first" / "policy")
    assert lineage[0]["data"] != lineage[1]["data"] and lineage[1]["settings"]["train"]["steps"] == 2
    assert lineage_summary(lineage) == "first(2 ep) -> second(2 steps)"
    shutil.move(tmp_path / "moved", runs / "first")

    # another architecture is refused in one line naming the field
    wider = run_cli_subprocess("train", "policy", "--recipe", "wider", cwd=tmp_path, env=env)
    assert wider.returncode == 2 and len(wider.stderr.strip().splitlines()) == 1, wider.stderr
    assert "another architecture (chunk_size 2 there, 3 here)" in wider.stderr

    # a run evaluated with the second stage's policy shows where its weights came from
    db = tmp_path / "r.sqlite"
    args = ("--policy", "pi0", "--checkpoint", str(runs / "second" / "policy"), "--tasks", "0", "--episodes", "1")
    ran = run_cli_subprocess(
        "run", "libero_object", *args, "--max-steps", "2", "--workers", "1", "--db", str(db), cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    [(run_id,)] = db_rows(db, "select run_id from runs")
    shown = run_cli_subprocess("runs", "show", run_id, "--db", str(db), cwd=tmp_path)
    assert "lineage: first(2 ep) -> second(2 steps)" in shown.stdout, shown.stdout


def test_table6_train_stops_before_any_work_naming_each_missing_input(tmp_path):
    result = run_cli_subprocess(
        "ablation", "table6", "--train", "--run", "--db", str(tmp_path / "t.sqlite"), cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "nothing was started" in lines[0]
    missing = [line.strip() for line in lines[1:]]
    for needed in (
        "datasets/bridge_dataset",
        "datasets/fractal20220817_data",
        "models/paligemma-3b-pt-224",
        "runs/vqvae-paper-bridge",
        "runs/vqvae-paper-fractal",
    ):
        assert sum(line.startswith(needed) for line in missing) == 1, (needed, missing)
    assert len(missing) == 5 and f"{len(missing)} input(s) missing" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database, no runs folder

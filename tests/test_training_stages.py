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


def test_epochs_init_from_resume_and_lineage(tmp_path, monkeypatch, cli):
    from safetensors.torch import load_file

    from qdepth_bench.core.lineage import lineage_summary, read_lineage
    from qdepth_bench.registry.ablations import Member, Variant
    from qdepth_bench.report.ablation import lineage_notes
    from qdepth_bench.train.policy import train_policy
    from qdepth_bench.train.recipe import load_recipe

    monkeypatch.setenv(CONTENT_ENV, str(stage_content(tmp_path)))
    runs = tmp_path / "runs"

    def train(*args: str):
        return cli("train", "policy", "--recipe", *args, db=False)

    # the second stage before the first: one line naming the command that makes its source
    early = train("second")
    assert early.exit_code == 2 and len(early.stderr.strip().splitlines()) == 1, early.stderr
    assert "`qdepth-bench train policy --recipe first`" in early.stderr

    # epochs -> steps: 2 epochs of 18 frames at a global batch of 6 are 6 steps, recorded with the schedule
    first = train_policy(load_recipe("first"))
    assert [int(r["step"]) for r in log_rows(runs / "first")] == list(range(6))
    config = json.loads((first / "config.json").read_text())
    assert config["schedule"] == {"epochs": 2.0, "epoch_frames": 18, "global_batch": 6, "steps": 6}
    assert config["step"] == 6

    # weights only: with lr 0 the second stage's weights stay the first's exactly, and it starts at step 0
    frozen = train_policy(load_recipe("second", {"train.lr": 0, "out": str(runs / "frozen")}))
    theirs, ours = load_file(str(first / "model.safetensors")), load_file(str(frozen / "model.safetensors"))
    assert theirs.keys() == ours.keys() and all(theirs[k].equal(ours[k]) for k in theirs)
    assert [int(r["step"]) for r in log_rows(runs / "frozen")] == [0, 1]

    # through the CLI: one step, then a resume that needs only its own checkpoint (the source moved away)
    part = train("second", "--set", "train.steps=1")
    assert part.exit_code == 0, part.stderr
    row = log_rows(runs / "second")[0]
    assert row["step"] == "0" and float(row["lr"]) == pytest.approx(1e-3 * 2 / 4)  # a fresh schedule: warm-up 2 of 4
    shutil.move(runs / "first", tmp_path / "moved")
    resumed = train("second", "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert [int(r["step"]) for r in log_rows(runs / "second")] == [0, 1]
    lineage = read_lineage(runs / "second" / "policy")
    assert lineage is not None and [s["recipe"] for s in lineage] == ["first", "second"]
    assert lineage[1]["init_from"]["path"] == str(runs / "first" / "policy")
    assert lineage[0]["data"] != lineage[1]["data"] and lineage[1]["settings"]["train"]["steps"] == 2
    assert lineage_summary(lineage) == "first(2 ep) -> second(2 steps)"
    shutil.move(tmp_path / "moved", runs / "first")

    # another architecture is refused in one line naming the field
    wider = train("wider")
    assert wider.exit_code == 2 and len(wider.stderr.strip().splitlines()) == 1, wider.stderr
    assert "another architecture (chunk_size 2 there, 3 here)" in wider.stderr

    # a run evaluated with the second stage's policy shows where its weights came from
    policy = ("--policy", "pi0", "--checkpoint", str(runs / "second" / "policy"))
    ran = cli("run", "libero_object", *policy, "--tasks", "0", "--episodes", "1", "--max-steps", "2", "--workers", "1")
    assert ran.exit_code == 0, ran.stderr
    [(run_id,)] = db_rows(tmp_path / "results" / "bench.sqlite", "select run_id from runs")  # the `cli` fixture's
    shown = cli("runs", "show", run_id)
    assert "lineage: first(2 ep) -> second(2 steps)" in shown.stdout, shown.stdout
    # and the ablation report's note for a model installed from it
    note = lineage_notes([Member(Variant("pi0", "no depth"), 0, runs / "second" / "policy")])
    assert note == ["pi0 seed 0 trained as first(2 ep) -> second(2 steps)"]


def test_table6_train_stops_before_any_work_naming_each_missing_input(tmp_path):
    result = run_cli_subprocess(
        "ablation", "table6", "--train", "--run", "--db", str(tmp_path / "t.sqlite"), cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "nothing was started" in lines[0]
    missing = [line.strip() for line in lines[1:]]
    for needed in ("datasets/bridge_dataset/1.0.0: ", "models/paligemma-3b-pt-224: ", "runs/vqvae-paper-bridge: "):
        assert sum(line.startswith(needed) for line in missing) == 1, (needed, missing)
    assert len(missing) == 3 and "3 input(s) missing" in lines[0]
    assert "`qdepth-bench train vqvae --recipe vqvae-paper-bridge`" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database, no runs folder


def test_libero_full_walks_three_stages_and_names_their_inputs(cli, tmp_path, monkeypatch):
    from qdepth_bench.registry.ablations import ablation_spec
    from qdepth_bench.train.members import member_recipe
    from qdepth_bench.train.stages import stage_chain

    monkeypatch.chdir(tmp_path)
    member = ablation_spec("libero-full").members()[3]  # a variant's seed 1: every stage at that seed
    chain = stage_chain(member_recipe(member))
    assert [(s.name, s.length, s.train.seed) for s in chain] == [
        ("qdepth-no-depth-loss-paper-libero-fractal", "9 epochs", 1),
        ("qdepth-no-depth-loss-paper-libero90", "20 epochs", 1),
        ("qdepth-no-depth-loss-paper-libero", "50 epochs", 1),
    ]
    assert chain[0].init_from is None and str(chain[1].out).endswith("libero90-seed1")
    result = cli("ablation", "libero-full", "--train")
    assert result.exit_code == 2
    missing = result.stderr.strip().splitlines()[1:]
    assert len(missing) == 10 and sum("paligemma" in line for line in missing) == 1  # one line per input


def test_a_recipe_counts_steps_or_epochs_not_both(tmp_path):
    from qdepth_bench.core.errors import UserError
    from qdepth_bench.train.recipe import load_recipe

    both = tmp_path / "both.json"
    both.write_text(json.dumps({"out": "o", "data": {}, "train": {"steps": 3, "epochs": 2}}))
    with pytest.raises(UserError, match="not both"):
        load_recipe(both)
    # a value given later (an extending recipe, or --set) replaces the other unit
    assert load_recipe("qdepth-paper-fractal").length == "9 epochs"
    assert load_recipe("qdepth-paper-fractal", {"train.steps": "4"}).length == "4 steps"
    assert load_recipe("qdepth-paper-libero90").length == "20 epochs"

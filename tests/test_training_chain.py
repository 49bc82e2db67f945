"""The miniature of the whole training chain through the real CLI (docs/training.md, "The miniature chain"):
scripted WidowX rollouts on ManiSkill3 written as Bridge V2 RLDS by `data generate`, depth labels by
Video-Depth-Anything (`depth annotate`, seeded weights of the released vits shapes), the depth VQ-VAE, then
`ablation table6-mini --train --run`: two variants, each trained in two stages (the second `init_from` the
first) and evaluated on SIMPLER WidowX. The run is killed during a second stage and resumed with the same
command (SIGKILL); its table and weights equal those of an uninterrupted second stage run from the same first stages."""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli_subprocess
from helpers_vida import read_shapes

from qdepth_bench.models.vida.checkpoint import seeded_weights
from qdepth_bench.registry.content import builtin_root

#: found, not imported: ManiSkill3 reads its asset folder once, at import, and the backend sets it first
needs_maniskill = pytest.mark.skipif(
    importlib.util.find_spec("mani_skill") is None, reason="mani-skill is not installed"
)

#: the two stand-in datasets: SIMPLER WidowX task id -> the folder the mini recipes read
DATASETS = {"0": "widowx-mini-carrot", "2": "widowx-mini-spoon"}
STAGE2 = Path("runs/qdepth-mini-stage2")


def cli(work: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = run_cli_subprocess(*args, cwd=work, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def prepare(work: Path, vida: Path) -> None:
    """The data and VQ-VAE the recipes read, made with the project's own commands."""
    for task, name in DATASETS.items():
        generate = ["data", "generate", "simpler_widowx", "--policy", "scripted-widowx", "--format", "bridge_rlds"]
        cli(
            work,
            *generate,
            "--tasks",
            task,
            "--episodes-per-task",
            "1",
            "--max-steps",
            "40",
            "--stand-ins",
            "--out",
            f"data/{name}",
        )
        annotate = ["--layout", "bridge", "--source", "vida", "--checkpoint", str(vida), "--input-size", "28"]
        cli(work, "depth", "annotate", f"data/{name}/bridge_dataset/1.0.0", *annotate, "--device", "cpu")
    cli(work, "train", "vqvae", "--recipe", "vqvae-mini-widowx")
    for name in DATASETS.values():
        cli(work, "depth", "encode", f"data/{name}/bridge_dataset/1.0.0", "--vqvae", "runs/vqvae-mini-widowx")


def content(work: Path) -> dict[str, str]:
    """A content root holding the shipped miniature ablation, so its checkpoints are installed under `work`."""
    root = work / "content"
    (root / "ablations").mkdir(parents=True)
    shutil.copy(builtin_root() / "ablations" / "table6-mini.yaml", root / "ablations")
    return {"QDEPTH_BENCH_CONTENT": str(root)}


ABLATION = ["ablation", "table6-mini", "--train", "--run", "--workers", "1", "--format", "csv", "--db", "r.sqlite"]


def table(stdout: str) -> list[dict[str, str]]:
    return [row for row in csv.DictReader(io.StringIO(stdout)) if row["source"] == "ours"]


def logged_steps(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [int(row["step"]) for row in csv.DictReader(io.StringIO(log.read_text())) if row.get("step")]


def test_without_its_data_the_miniature_ablation_names_each_missing_input_and_starts_nothing(tmp_path):
    result = run_cli_subprocess(*ABLATION, cwd=tmp_path)
    assert result.returncode == 2 and "3 input(s) missing; nothing was started" in result.stderr
    for missing in ("data/widowx-mini-carrot/bridge_dataset/1.0.0", "data/widowx-mini-spoon", "runs/vqvae-mini-widowx"):
        assert missing in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the results database


@pytest.mark.slow
@needs_maniskill
def test_the_miniature_chain_is_killed_in_its_second_stage_and_resumes_to_the_uninterrupted_result(tmp_path):
    vida = tmp_path / "video_depth_anything_vits.pth"
    torch.save(seeded_weights(read_shapes("vits")), vida)
    killed = tmp_path / "killed"
    killed.mkdir()
    prepare(killed, vida)
    env = content(killed)

    exe = Path(sys.executable).with_name("qdepth-bench")
    with (killed / "first.log").open("w") as log:
        process = subprocess.Popen(
            [str(exe), *ABLATION], cwd=killed, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 600
        while (
            process.poll() is None
            and time.monotonic() < deadline
            and 3 not in logged_steps(killed / STAGE2 / "log.csv")
        ):
            time.sleep(0.05)
        assert process.poll() is None, (killed / "first.log").read_text()[-3000:]
        # at step 3 of 8 of the second stage, after its checkpoint at 2; SIGKILL, as a machine that stops (no
        # handler runs, and a checkpoint being written at that moment is left unfinished)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=120) == -signal.SIGKILL
    first = (killed / "first.log").read_text()
    assert "qdepth seed 0 stage 1/2: recipe qdepth-mini-bridge" in first
    assert not (killed / "content" / "policies" / "checkpoints" / "qdepth-mini-stage2").exists()

    resumed = cli(killed, *ABLATION, env=env)
    # the first stage is done: only the second continues, from its checkpoint
    assert re.search(r"qdepth seed 0 +to train: qdepth-mini-stage2 from step [24]/8", resumed.stderr)
    assert logged_steps(killed / STAGE2 / "log.csv") == list(range(8))  # every step once, across the kill

    # the uninterrupted second stages, from the same first stages, in another folder
    straight = tmp_path / "straight"
    for kept in ("data", "runs/vqvae-mini-widowx", "runs/qdepth-mini-bridge", "runs/qdepth-no-depth-loss-mini-bridge"):
        shutil.copytree(killed / kept, straight / kept)
    uninterrupted = cli(straight, *ABLATION, env=content(straight))
    assert "stage 1/2" not in uninterrupted.stderr  # the copied first stages are recognised as done

    for variant in ("qdepth-mini-stage2", "qdepth-no-depth-loss-mini-stage2"):
        installed = Path("content/policies/checkpoints") / variant / "model.safetensors"
        assert (killed / installed).read_bytes() == (straight / installed).read_bytes(), variant
    rows = table(resumed.stdout)
    assert rows == table(uninterrupted.stdout)
    assert {row["variant"] for row in rows} == {"QDepth-VLA (full)", "w/o Depth Loss"}
    assert all(row["Carrot n"] == "1" and row["Spoon n"] == "1" for row in rows)

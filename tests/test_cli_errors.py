"""Bad input gets one clear line and a non-zero exit, and never touches an existing database."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_suite_suggests_closest(cli):
    result = cli("run", "libero_objct", "--policy", "noop")
    assert result.exit_code == 2
    assert "Did you mean 'libero_object'" in one_error_line(result)


def test_unknown_policy_suggests_closest_and_lists_known(cli):
    result = cli("run", "libero_object", "--policy", "randm")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "Did you mean 'random'" in line and "noop" in line


def test_unknown_task(cli):
    result = cli("run", "libero_object", "--policy", "noop", "--tasks", "12")
    assert result.exit_code == 2
    assert "tasks 0..9" in one_error_line(result)


def test_episodes_zero(cli):
    result = cli("run", "libero_object", "--policy", "noop", "--episodes", "0")
    assert result.exit_code == 2
    assert "--episodes must be at least 1" in one_error_line(result)


def test_unknown_policy_option(cli):
    result = cli("run", "libero_object", "--policy", "random", "--policy-arg", "chunk=3")
    assert result.exit_code == 2
    assert "has no option 'chunk'" in one_error_line(result)


def test_unknown_format(cli):
    result = cli("table", "--format", "pdf")
    assert result.exit_code == 2
    assert "pdf" in result.stderr


def test_table_unknown_policy_is_an_error(cli):
    result = cli("table", "libero", "--policies", "nothing")
    assert result.exit_code == 2
    assert "no results for policy 'nothing'" in one_error_line(result)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_db_that_is_not_sqlite_is_refused_untouched(cli, tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("my notes, not a database\n")
    before = digest(path)
    result = cli("table", "--db", str(path), db=False)
    assert result.exit_code == 2
    assert "not a qdepth-bench database" in one_error_line(result)
    assert digest(path) == before


def test_foreign_sqlite_db_is_refused_untouched(cli, tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("create table people (name text)")
    conn.execute("insert into people values ('ada')")
    conn.commit()
    conn.close()
    before = digest(path)
    result = cli("runs", "list", "--db", str(path), db=False)
    assert result.exit_code == 2
    assert "not a qdepth-bench one" in one_error_line(result)
    assert digest(path) == before
    assert not Path(str(path) + "-wal").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; permissions cannot be tested")
def test_unwritable_db_folder(cli, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = cli("table", "--db", str(folder / "x.sqlite"), db=False)
    finally:
        folder.chmod(0o700)
    assert result.exit_code == 2
    assert "writable" in one_error_line(result)


def test_db_path_under_a_file_is_refused(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("table", "--db", str(blocker / "x.sqlite"), db=False)
    assert result.exit_code == 2
    assert "pass a --db path in a writable folder" in one_error_line(result)


def test_db_that_is_a_directory(cli, tmp_path):
    result = cli("table", "--db", str(tmp_path), db=False)
    assert result.exit_code == 2
    assert "is a directory" in one_error_line(result)


def test_db_on_a_filesystem_that_refuses_writes(cli):
    result = cli("table", "--db", "/proc/qdepth-bench.sqlite", db=False)
    assert result.exit_code == 2
    assert "pass another --db path" in one_error_line(result)


def test_grid_options_on_a_suite_without_grids(cli):
    result = cli("run", "libero_object", "--policy", "noop", "--grid-mode", "prepackaged")
    assert result.exit_code == 2
    assert "'libero_object' has no protocol setting 'grid_mode'" in one_error_line(result)


def test_suites_lists_grid_episode_totals(cli):
    result = cli("suites", db=False)
    assert result.exit_code == 0
    google = next(line for line in result.stdout.splitlines() if line.startswith("│ simpler_google "))
    assert [cell.strip() for cell in google.split("│")[3:7]] == ["4", "108-300", "864", "80-200"]


def test_refused_checkpoint_is_one_line_while_env_workers_start_early(tmp_path):
    """`run` starts its env workers before it loads the policy; a checkpoint refused seconds later (after
    the workers have imported the simulator, which prints warnings) is still one line on stderr, because
    a worker holds its output back until the run's settings reach it."""
    import shutil

    from conftest import run_cli_subprocess

    from qdepth_bench.registry.content import builtin_root

    shipped = builtin_root() / "policies" / "checkpoints" / "qdepth-tiny-libero-object"
    broken = tmp_path / "broken"
    shutil.copytree(shipped, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = run_cli_subprocess(
        "run", "libero_object", "--policy", "qdepth", "--checkpoint", str(broken), "--tasks", "0",
        "--episodes", "2", "--workers", "2", "--db", str(tmp_path / "r.sqlite"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "model.safetensors is corrupt" in one_error_line(result)
    assert not (tmp_path / "r.sqlite").exists()

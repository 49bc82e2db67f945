"""The scripted expert validates the LIBERO adapter end to end (action scaling, gripper sign, image
rotation, success detection): it must solve most libero_object episodes under the standard protocol."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import run_cli_subprocess

pytestmark = pytest.mark.slow


def test_scripted_expert_success_floor_on_libero_object(tmp_path):
    db = tmp_path / "expert.sqlite"
    result = run_cli_subprocess(
        "run",
        "libero_object",
        "--policy",
        "scripted",
        "--tasks",
        "0-4",
        "--episodes",
        "5",
        "--db",
        str(db),
        cwd=tmp_path,
        timeout=3000,
    )
    assert result.returncode == 0, result.stderr
    conn = sqlite3.connect(db)
    rows = conn.execute("select task_id, status from episodes").fetchall()
    standard = conn.execute("select standard_protocol from runs").fetchone()[0]
    conn.close()
    assert len(rows) == 25 and standard == 1
    assert not [r for r in rows if r[1] == "error"]
    successes = sum(status == "success" for _, status in rows)
    assert successes / len(rows) >= 0.6, rows

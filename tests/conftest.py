"""Shared fixtures: the real CLI (in-process through Typer's runner, or as a subprocess) on a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qdepth_bench.cli import app


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "results" / "bench.sqlite"


@pytest.fixture
def cli(db_path: Path):
    """Run `qdepth-bench ARGS --db <tmp db>` in-process; returns the click Result."""
    runner = CliRunner()

    def invoke(*args: str, db: bool = True):
        argv = list(args)
        if db:
            argv += ["--db", str(db_path)]
        return runner.invoke(app, argv, catch_exceptions=False)

    return invoke


def db_rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of one query on a results database written by a run."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def episodes_recorded(db: Path) -> int:
    """Episode rows of a database a run in another process may still be creating (0 until its schema exists)."""
    try:
        return db_rows(db, "select count(*) from episodes")[0][0] if db.exists() else 0
    except sqlite3.OperationalError:  # the file exists, its tables are not created yet
        return 0


def run_cli_subprocess(
    *args: str, cwd: Path, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would, in `cwd`, with `env` added to the environment."""
    exe = Path(sys.executable).with_name("qdepth-bench")
    return subprocess.run(
        [str(exe), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )

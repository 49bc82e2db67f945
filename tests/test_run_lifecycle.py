"""Runs that survive: one owner per run (or cooperating processes that never share an episode), truthful
status after signals, transient errors retried by the next run with a non-zero exit meanwhile, checks
before the first episode, concurrent and damaged databases, and a server that answers bad requests briefly.
Real processes, signals and LIBERO workers; real SQLite files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows, episodes_recorded, run_cli_subprocess

from qdepth_bench.core.errors import TransientError, is_transient
from qdepth_bench.registry.policies import make_policy
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.remote.server import PolicyServer
from qdepth_bench.remote.wire import pack
from qdepth_bench.results.store import Store

EXE = str(Path(sys.executable).with_name("qdepth-bench"))
NOOP = ["run", "libero_object", "--policy", "noop", "--tasks", "0", "--max-steps", "20", "--workers", "1"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [EXE, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,  # signals reach the driver alone, as `kill PID` would
    )


def wait_until(condition, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


def sessions_running(db: Path) -> bool:
    try:
        return bool(db_rows(db, "select count(*) from run_sessions where status = 'running'")[0][0])
    except sqlite3.OperationalError:
        return False


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_joining_one_shares_the_episodes(tmp_path):
    db = tmp_path / "r.sqlite"
    args = [*NOOP, "--episodes", "6", "--db", str(db)]
    owner = start(args, tmp_path)
    wait_until(lambda: sessions_running(db))
    refused = run_cli_subprocess(*args, cwd=tmp_path)
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()
    assert len(line) == 1 and f"pid {owner.pid}" in line[0] and "--join" in line[0]
    joined = run_cli_subprocess(*args, "--join", cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr
    owner.communicate(timeout=600)
    assert owner.returncode == 0
    run_id = db_rows(db, "select run_id from runs")[0][0]
    log = (tmp_path / "logs" / f"r-{run_id}.log").read_text()
    ran = [line.split()[2] for line in log.splitlines() if " episode " in line and "status=" in line]
    assert sorted(ran) == sorted(set(ran)) and len(ran) == 6  # every episode run once, by one of the two
    assert episodes_recorded(db) == 6 and db_rows(db, "select status from runs") == [("finished",)]
    per_session = db_rows(db, "select count(*) from episodes group by session_id")
    assert sum(n for (n,) in per_session) == 6


@pytest.mark.slow
@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)])
def test_sigterm_and_a_second_ctrl_c_end_like_the_first(tmp_path, signals):
    db = tmp_path / "r.sqlite"
    proc = start([*NOOP, "--episodes", "6", "--db", str(db)], tmp_path)
    wait_until(lambda: episodes_recorded(db) >= 1)
    for signum in signals:
        os.kill(proc.pid, signum)
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted: finished episodes are saved" in stderr
    assert db_rows(db, "select status from runs") == [("interrupted",)]
    assert db_rows(db, "select status from run_sessions") == [("interrupted",)]
    assert 1 <= episodes_recorded(db) < 6


@pytest.mark.slow
def test_transient_errors_exit_non_zero_and_the_next_run_retries_them(tmp_path):
    db, marker = tmp_path / "r.sqlite", tmp_path / "server-down"
    marker.touch()
    args = [
        "run",
        "libero_object",
        "--policy",
        "helpers_policies:FlakyPolicy",
        "--policy-arg",
        f"down_while={marker}",
        "--tasks",
        "0",
        "--episodes",
        "1",
        "--max-steps",
        "5",
        "--workers",
        "1",
        "--db",
        str(db),
    ]
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    down = run_cli_subprocess(*args, cwd=tmp_path, env=env)
    assert down.returncode == 3, down.stderr
    last = down.stderr.strip().splitlines()[-1]
    assert "1 of 1 episodes ended in errors" in last and "run the same command again" in last
    assert db_rows(db, "select status, error_kind, attempts from episodes") == [("error", "transient", 3)]
    again = run_cli_subprocess(*args, cwd=tmp_path, env=env)  # still down: tried again, not given up
    assert again.returncode == 3 and "1 episodes (0 already recorded)" in again.stdout
    marker.unlink()  # the server is back
    back = run_cli_subprocess(*args, cwd=tmp_path, env=env)
    assert back.returncode == 0, back.stderr
    assert db_rows(db, "select status from episodes") == [("failure",)]


def test_errors_are_classified():
    assert is_transient(TransientError("server down")) and is_transient(ConnectionRefusedError())
    assert is_transient(OSError(28, "No space left on device"))
    assert not is_transient(RuntimeError("model exploded")) and not is_transient(ValueError("bad shape"))


def test_bad_values_are_refused_before_anything_is_created(tmp_path, cli):
    db = tmp_path / "new" / "r.sqlite"
    (tmp_path / "a-file").write_text("x")
    cases = [
        (["run", "libero_object", "--policy", "noop", "--tasks", "3-1"], "runs backwards"),
        (["run", "libero_object", "--policy", "random", "-a", "chunk_size=0"], "chunk_size must be > 0"),
        (["run", "libero_object", "--policy", "noop", "--video", str(tmp_path / "a-file" / "v")], "is a file"),
        (["run", "libero_object", "--policy", "noop", "--repeats", "0"], "--repeats must be at least 1"),
    ]
    for args, expected in cases:
        result = cli(*args, "--db", str(db), db=False)
        assert result.exit_code == 2 and expected in result.output, result.output
        assert not db.parent.exists()  # a refused command leaves no new file behind
    for args, expected in (
        (["serve", "--policy", "noop", "--port", "70000"], "not a TCP port"),
        (["serve", "--policy", "noop", "--max-request-mb", "0"], "--max-request-mb must be at least 1"),
    ):
        result = cli(*args, db=False)
        assert result.exit_code == 2 and expected in result.output and "serving" not in result.output


def test_a_checkpoint_whose_config_does_not_fit_its_weights_is_one_line(tmp_path, cli):
    from qdepth_bench.registry.content import builtin_root

    folder = tmp_path / "ckpt"
    shutil.copytree(builtin_root() / "policies" / "checkpoints" / "qdepth-tiny-libero-object", folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["action_expert"]["intermediate_size"] += 32
    (folder / "config.json").write_text(json.dumps(config))
    result = cli("run", "libero_object", "--policy", "qdepth", "--checkpoint", str(folder), "--tasks", "0")
    assert result.exit_code == 2
    line = result.output.strip().splitlines()
    assert len(line) == 1 and "does not match its config.json" in line[0] and "has shape" in line[0]


def test_six_processes_creating_one_database_all_succeed(tmp_path):
    db = tmp_path / "new.sqlite"
    procs = [
        subprocess.Popen([EXE, "runs", "list", "--db", str(db)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert not any("locked" in err for _, err in results)


def test_a_damaged_database_is_one_line_and_salvage_keeps_the_readable_rows(tmp_path):
    db = tmp_path / "r.sqlite"
    store = Store(db)
    from test_store import episode, run_record

    store.start_run(run_record("r1"))
    for i in range(400):
        store.record_episode({**episode("r1", i, "success"), "error": "x" * 200})
    store.db.conn.execute("pragma wal_checkpoint(truncate)")
    store.db.conn.close()
    # overwrite one page in the middle of the episodes table with garbage
    page = 4096
    pages = db.stat().st_size // page
    with open(db, "r+b") as f:
        f.seek(page * (pages // 2))
        f.write(os.urandom(page))
    listed = run_cli_subprocess("table", "libero_object", "--db", str(db), cwd=tmp_path)
    assert listed.returncode == 2 and "Traceback" not in listed.stderr
    line = listed.stderr.strip().splitlines()
    assert len(line) == 1 and "runs salvage" in line[0]
    out = tmp_path / "saved.sqlite"
    saved = run_cli_subprocess("runs", "salvage", "--db", str(db), "--out", str(out), cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    kept = db_rows(out, "select count(*) from episodes")[0][0]
    assert 300 <= kept < 400  # one page of rows lost, the rest kept
    assert run_cli_subprocess("runs", "list", "--db", str(out), cwd=tmp_path).returncode == 0


def test_the_server_answers_bad_requests_briefly_and_says_whose_fault():
    spec = suite_registry().suites["libero_object"]
    server = PolicyServer(make_policy("noop"), make_backend(spec).task_info(0))
    rng = np.random.default_rng(0)
    good = {
        "observation/image": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": "pick",
    }
    assert isinstance(server.answer(pack(good), 0, set()), bytes)
    import msgpack

    malformed = msgpack.packb({"observation/state": {b"__ndarray__": True, b"dtype": "<f4"}})
    assert server.answer(malformed, 0, set()) == (
        "bad request: not a msgpack observation map (malformed array: lacks b'data')"
    )
    garbage = server.answer(os.urandom(512), 0, set())
    assert garbage.startswith("bad request: not a msgpack observation map (") and len(garbage) < 400
    many = server.answer(msgpack.packb({str(i): i for i in range(100_000)}), 0, set())
    assert many.startswith("bad request") and "max_map_len" in many and len(many) < 400
    missing = server.answer(pack({f"k{i}": 1 for i in range(200)}), 0, set())
    assert missing.startswith("bad request: missing key 'observation/state'") and "192 more" in missing
    wrong = {**good, "observation/state": np.zeros((2, 2), np.float32)}
    assert server.answer(pack(wrong), 0, set()).startswith("bad request: 'observation/state' must be")


@contextlib.contextmanager
def mounted(kind: str, target: Path, source: Path | None = None, size: str = "") -> Iterator[None]:
    """A read-only bind mount of `source` or a small tmpfs at `target` (root with mount rights; else skip)."""
    target.mkdir(parents=True, exist_ok=True)
    if kind == "ro":
        commands = [["mount", "--bind", str(source), str(target)], ["mount", "-o", "remount,ro,bind", str(target)]]
    else:
        commands = [["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)]]
    for command in commands:
        if subprocess.run(command, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(target)], capture_output=True)
            pytest.skip(f"cannot mount here ({' '.join(command)}): needs root with mount rights")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_reports_read_a_database_on_a_read_only_filesystem(tmp_path):
    source, target = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    committed = Path(__file__).parent.parent / "results" / "measured" / "libero-object-tiny.sqlite"
    shutil.copy(committed, source / "r.sqlite")
    with mounted("ro", target, source):
        db = str(target / "r.sqlite")
        table = run_cli_subprocess("table", "libero_object", "--db", db, "--format", "csv", cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        assert ",ours," in table.stdout and "qdepth" in table.stdout
        assert run_cli_subprocess("runs", "list", "--db", db, cwd=tmp_path).returncode == 0
        refused = run_cli_subprocess(*NOOP, "--episodes", "1", "--db", db, cwd=tmp_path)
        assert refused.returncode == 2 and "read-only" in refused.stderr.strip().splitlines()[-1]
        assert sorted(p.name for p in target.iterdir()) == ["r.sqlite"]


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_is_one_line_and_keeps_what_was_recorded(tmp_path):
    disk = tmp_path / "disk"
    with mounted("tmpfs", disk, size="24m"):
        db = disk / "r.sqlite"
        proc = start([*NOOP, "--episodes", "6", "--max-steps", "60", "--db", str(db)], tmp_path)
        wait_until(lambda: episodes_recorded(db) >= 1)
        with open(disk / "filler", "wb", buffering=0) as f:  # take every byte left
            for block in (1 << 20, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * block)
        _, stderr = proc.communicate(timeout=600)
        kept = episodes_recorded(db)
        assert proc.returncode == 2 and "Traceback" not in stderr, stderr
        assert "is full" in stderr.strip().splitlines()[-1] and "run the same command again" in stderr
        assert 1 <= kept < 6
        (disk / "filler").unlink()
        resumed = run_cli_subprocess(*NOOP, "--episodes", "6", "--max-steps", "60", "--db", str(db), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert episodes_recorded(db) == 6 and f"({kept} already recorded)" in resumed.stdout

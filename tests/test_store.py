"""The results store on a real SQLite file: schema, WAL, run keys, atomic per-episode upserts."""

from __future__ import annotations

import sqlite3

from qdepth_bench.results.store import SCHEMA_VERSION, Store


def run_record(run_id: str) -> dict:
    return {
        "run_id": run_id,
        "run_key": "{}",
        "suite": "libero_object",
        "suite_family": "libero",
        "backend": "libero",
        "policy_name": "noop",
        "policy_config_hash": "c",
        "policy_checkpoint_hash": "",
        "policy_config": "{}",
        "policy_requirements": "{}",
        "setting": "single-view",
        "protocol": "{}",
        "protocol_hash": "p",
        "protocol_version": 1,
        "standard_protocol": 1,
        "seed": 7,
        "git_commit": "",
        "package_versions": "{}",
        "host": "h",
        "command": "c",
        "episodes_requested": 2,
    }


def episode(run_id: str, ep: int, status: str, attempts: int = 1) -> dict:
    return {
        "run_id": run_id,
        "suite": "libero_object",
        "task_id": 0,
        "task_name": "t",
        "episode_index": ep,
        "variant": {"init_state": ep},
        "seed": ep,
        "status": status,
        "success": None if status == "error" else int(status == "success"),
        "partial_success": None,
        "steps": 3,
        "wall_time_s": 0.1,
        "error": "",
        "video_path": "",
        "attempts": attempts,
    }


def test_wal_and_schema(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    assert store.db.journal_mode == "wal"
    assert {"runs", "episodes", "reference_results", "qdepth_bench_meta"} <= set(store.db.table_names())
    assert store.meta("schema_version") == str(SCHEMA_VERSION)


def test_run_id_depends_on_every_key_part():
    base = {
        "policy_name": "a",
        "policy_config_hash": "c",
        "policy_checkpoint_hash": "",
        "suite": "s",
        "protocol_hash": "p",
        "seed": 7,
    }
    ids = {Store.run_id_for({**base, k: "other"}) for k in base} | {Store.run_id_for(base)}
    assert len(ids) == len(base) + 1
    assert Store.run_id_for(dict(base)) == Store.run_id_for(base)


def test_episode_upsert_never_duplicates_and_replaces_errors(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.start_run(run_record("r1"))
    store.record_episode(episode("r1", 0, "error"))
    store.record_episode(episode("r1", 0, "success", attempts=2))
    store.record_episode(episode("r1", 1, "failure"))
    assert store.episode_states("r1") == {(0, 0, 0): ("success", 2), (0, 1, 0): ("failure", 1)}
    assert store.db["episodes"].count == 2


def test_restart_keeps_created_time_and_marks_running(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.start_run(run_record("r1"))
    created = store.run("r1")["created_at"]
    store.finish_run("r1", "finished")
    store.start_run(run_record("r1"))
    record = store.run("r1")
    assert record["created_at"] == created and record["status"] == "running" and record["finished_at"] is None
    assert store.db["runs"].count == 1


def test_delete_run_removes_its_episodes(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.start_run(run_record("r1"))
    store.record_episode(episode("r1", 0, "success"))
    assert store.delete_run("r1") == 1
    assert store.db["episodes"].count == 0 and store.db["runs"].count == 0


def test_reopening_an_existing_database(tmp_path):
    path = tmp_path / "db.sqlite"
    Store(path).start_run(run_record("r1"))
    assert len(Store(path).runs()) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_version_1_database_gains_the_newer_columns(tmp_path):
    import sqlite3

    from qdepth_bench.results.store import EPISODE_COLUMNS, Store

    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    newer = ("metrics", "policy_calls", "actions_per_call", "timing", "session_id", "repeat")
    columns = ", ".join(c for c in EPISODE_COLUMNS if c not in newer)
    conn.execute(f"create table episodes ({columns}, primary key (run_id, task_id, episode_index))")
    conn.execute("create table qdepth_bench_meta (key text primary key, value text)")
    conn.execute("insert into qdepth_bench_meta values ('schema_version', '1')")
    values = ", ".join("?" for c in EPISODE_COLUMNS if c not in newer)
    row = {c: None for c in EPISODE_COLUMNS if c not in newer} | {"run_id": "r1", "task_id": 0, "episode_index": 3}
    conn.execute(f"insert into episodes values ({values})", [row[c] for c in EPISODE_COLUMNS if c not in newer])
    conn.commit()
    conn.close()
    store = Store(path)
    assert set(newer) <= set(store.db["episodes"].columns_dict)
    # the repeat joins the episode key; rows recorded before it are repeat 0
    assert store.db["episodes"].pks == ["run_id", "task_id", "episode_index", "repeat"]
    assert [(int(r["episode_index"]), r["repeat"]) for r in store.db["episodes"].rows] == [(3, 0)]
    assert "run_sessions" in store.db.table_names()
    assert {"replan_steps", "actions_per_call"} <= set(store.db["runs"].columns_dict)
    assert store.meta("schema_version") == str(SCHEMA_VERSION)


def test_reading_a_committed_database_leaves_its_bytes_alone(tmp_path):
    """Result databases ship in the repository (results/measured/); rendering a report must not rewrite them.
    Each command is its own process, so its connection closes and the WAL is folded into the file."""
    import hashlib

    from conftest import run_cli_subprocess

    path = tmp_path / "db.sqlite"
    before = None
    for _ in range(3):  # the first creates the file and loads the paper's rows; the others only read
        result = run_cli_subprocess("table", "--format", "csv", "--db", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert before is None or digest == before
        before = digest

"""The results database's schema: its tables and columns, the version it is at, how an older file is brought
up to it, and the check that refuses (without writing a byte) a file that is not a qdepth-bench database.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlite_utils

from qdepth_bench.core.errors import UserError

#: 2: episodes.metrics (backend-specific outcomes as JSON); 3: how chunks were executed (runs.replan_steps,
#: runs.actions_per_call, episodes.policy_calls, episodes.actions_per_call); 4: episodes.timing (seconds
#: per phase as JSON, `eval.timing`); 5: run_sessions (who recorded which episodes, on what machine, alive
#: until when), episodes.session_id, episodes.repeat in the episode key (`run --repeats`), episodes.error_kind
#: (an error that may pass by itself is retried by every later run) and episode_claims; 6: `run --depth-metrics`
#: (runs.depth_metrics, the per-episode depth scores `DEPTH_COLUMNS` and episodes.depth_detail as JSON)
SCHEMA_VERSION = 6
#: the episodes table's primary key (`EpisodeSpec.place` within a run)
EPISODE_PRIMARY_KEY = ("run_id", "task_id", "episode_index", "repeat")
META_TABLE = "qdepth_bench_meta"

RUN_COLUMNS: dict[str, type] = {
    "run_id": str,
    "run_key": str,
    "suite": str,
    "suite_family": str,
    "backend": str,
    "policy_name": str,
    "policy_config_hash": str,
    "policy_checkpoint_hash": str,
    "policy_config": str,
    "policy_requirements": str,
    "setting": str,
    "protocol": str,
    "protocol_hash": str,
    "protocol_version": int,
    "standard_protocol": int,
    "seed": int,
    "git_commit": str,
    "package_versions": str,
    "host": str,
    "command": str,
    "created_at": float,
    "started_at": float,
    "finished_at": float,
    "status": str,
    "episodes_requested": int,
    "replan_steps": int,
    "actions_per_call": int,
    "depth_metrics": int,
}
#: an episode's depth scores under `run --depth-metrics` (`eval.depth_metrics`); NULL without it
DEPTH_COLUMNS = ("depth_token_accuracy", "depth_top5_accuracy", "depth_cross_entropy", "depth_abs_rel")
EPISODE_COLUMNS: dict[str, type] = {
    "run_id": str,
    "suite": str,
    "task_id": int,
    "task_name": str,
    "episode_index": int,
    "repeat": int,
    "variant": str,
    "seed": int,
    "status": str,
    "success": int,
    "partial_success": float,
    "steps": int,
    "wall_time_s": float,
    "error": str,
    "video_path": str,
    "attempts": int,
    "finished_at": float,
    "metrics": str,
    "policy_calls": int,
    "actions_per_call": int,
    "timing": str,
    "session_id": str,
    "error_kind": str,
    **dict.fromkeys(DEPTH_COLUMNS, float),
    "depth_detail": str,
}
#: One invocation that worked on a run: its owner (host, pid), heartbeat and the machine it ran on. A run can
#: be resumed elsewhere, so each episode points at the session that recorded it.
SESSION_COLUMNS: dict[str, type] = {
    "session_id": str,
    "run_id": str,
    "command": str,
    "host": str,
    "pid": int,
    "started_at": float,
    "heartbeat_at": float,
    "ended_at": float,
    "status": str,
    "fingerprint": str,
    "fingerprint_hash": str,
    "machine_hash": str,
}
REFERENCE_COLUMNS: dict[str, type] = {
    "source": str,
    "table_id": str,
    "table_title": str,
    "category": str,
    "method": str,
    "setting": str,
    "column_label": str,
    "column_order": int,
    "suite": str,
    "task": str,
    "success_rate": float,
    "row_order": int,
}
#: Episode outcomes; an error is neither a success nor a failure and is retried on resume.
OUTCOMES = ("success", "failure", "error")
#: An episode taken by a session that works on the run together with others (`run --join`).
CLAIM_COLUMNS: dict[str, type] = {
    "run_id": str,
    "task_id": int,
    "episode_index": int,
    "repeat": int,
    "session_id": str,
    "claimed_at": float,
}


def meta(db: sqlite_utils.Database, key: str) -> str | None:
    """A value of the database's own metadata (schema version, digest of the reference rows)."""
    rows = list(db.query(f"select value from {META_TABLE} where key = ?", [key]))
    return rows[0]["value"] if rows else None


def check_existing(path: Path) -> None:
    """Refuse, without writing a byte, a file that is not a qdepth-bench database."""
    if path.is_dir():
        raise UserError(f"--db {path} is a directory; give a file path such as {path / 'qdepth-bench.sqlite'}.")
    if path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        header = f.read(16)
    if header != b"SQLite format 3\x00":
        raise UserError(f"--db {path} is not a qdepth-bench database (not SQLite); pass another --db path.")
    # on a read-only filesystem a WAL database cannot get its -shm file: read it as immutable there
    mode = "mode=ro" if os.access(path.parent if str(path.parent) else ".", os.W_OK) else "immutable=1"
    try:
        conn = sqlite3.connect(f"file:{path}?{mode}", uri=True)
        try:
            tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
            version = None
            if META_TABLE in tables:
                row = conn.execute(f"select value from {META_TABLE} where key='schema_version'").fetchone()
                version = int(row[0]) if row else None
            # before anything writes to it: a damaged page found later would already have had rows added
            problem = conn.execute("pragma quick_check(1)").fetchone()[0] if tables else "ok"
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"--db {path} cannot be read as SQLite ({exc}); pass another --db path.") from exc
    if problem != "ok":
        raise UserError(
            f"--db {path} is damaged ({' '.join(str(problem).split())[:200]}); nothing was written to it. "
            f"`qdepth-bench runs salvage --db {path} --out NEW.sqlite` copies every readable row into a new database."
        )
    if tables and META_TABLE not in tables:
        raise UserError(f"--db {path} is a SQLite database but not a qdepth-bench one; pass another --db path.")
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(f"--db {path} was written by a newer qdepth-bench (schema {version}); upgrade qdepth-bench.")


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Create the tables and indexes, and bring an older file's columns and keys to this version."""
    with db.conn:
        db.table(META_TABLE).create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db.table("runs").create(RUN_COLUMNS, pk="run_id", if_not_exists=True)
        db.table("episodes").create(
            EPISODE_COLUMNS,
            pk=EPISODE_PRIMARY_KEY,
            not_null={"repeat"},
            defaults={"repeat": 0},
            foreign_keys=[("run_id", "runs", "run_id")],
            if_not_exists=True,
        )
        db.table("reference_results").create(REFERENCE_COLUMNS, if_not_exists=True)
        db.table("run_sessions").create(SESSION_COLUMNS, pk="session_id", if_not_exists=True)
        db.table("episode_claims").create(
            CLAIM_COLUMNS,
            pk=EPISODE_PRIMARY_KEY,
            if_not_exists=True,
        )
        for table, columns in (("runs", RUN_COLUMNS), ("episodes", EPISODE_COLUMNS)):  # older schemas
            for name in sorted(set(columns) - set(db.table(table).columns_dict)):
                db.table(table).add_column(name, columns[name], not_null_default=0 if name == "repeat" else None)
        if tuple(db.table("episodes").pks) != EPISODE_PRIMARY_KEY:  # schema < 5: the repeat joins the key
            db.table("episodes").transform(pk=EPISODE_PRIMARY_KEY)
        if meta(db, "schema_version") != str(SCHEMA_VERSION):  # reading a report leaves the file as it was
            db.table(META_TABLE).upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
    db.table("episodes").create_index(["run_id", "status"], if_not_exists=True)
    db.table("run_sessions").create_index(["run_id"], if_not_exists=True)
    db.table("episodes").create_index(["session_id"], if_not_exists=True)

"""The results database: runs, episodes and the paper's reference numbers, in one SQLite file.

A run is one policy (identity) on one suite under one protocol (hash) and seed; its id is a hash of that
key, so running the same command again finds the same run and only adds the episodes it lacks. Each
episode is written in its own transaction the moment it ends, keyed by (run, task, episode index), so
an interrupted run loses nothing and a repeated one never duplicates. WAL mode lets readers (tables,
progress) work while a run writes.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import sqlite_utils

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import stable_hash
from qdepth_bench.results.schema import (
    EPISODE_COLUMNS,
    EPISODE_PRIMARY_KEY,
    META_TABLE,
    OUTCOMES,
    REFERENCE_COLUMNS,
    SCHEMA_VERSION,
    check_existing,
    ensure_schema,
    meta,
)
from qdepth_bench.results.sessions import SessionsMixin

DEFAULT_DB = Path("results") / "qdepth-bench.sqlite"
DB_ENV = "QDEPTH_BENCH_DB"
#: how long a process waits for another's lock on the database before giving up
BUSY_TIMEOUT_S = 30.0


def remove_database(path: Path) -> None:
    """Delete a database file with SQLite's journal files beside it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def default_db_path() -> Path:
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB)


class Store(SessionsMixin):
    """The results database at `path`, created with its schema on first use. A database that cannot be
    written (a read-only filesystem, a file without write permission) opens read-only, for reports."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.read_only = False
        if self.path.exists():
            check_existing(self.path)
        folder = self.path.parent if str(self.path.parent) else Path(".")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create the folder of --db {self.path}: {exc.strerror}; pass a --db path in a writable folder."
            ) from exc
        # WAL needs the folder writable too (it keeps -wal and -shm files beside the database).
        if not os.access(folder, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            if not self.path.exists():
                raise UserError(
                    f"--db {self.path} is not writable; pass a --db path in a writable folder or set {DB_ENV}."
                )
            self._open_read_only()
            return
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.db = sqlite_utils.Database(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S))
                self.db.enable_wal()
                ensure_schema(self.db)
                break
            except sqlite3.OperationalError as exc:
                # switching to WAL and creating the schema take locks SQLite does not wait for: N processes
                # opening one new database at once retry instead of failing
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise UserError(f"--db {self.path}: {exc}; pass another --db path.") from exc
                self.db.conn.close()
                time.sleep(0.05 + 0.1 * random.random())
            except sqlite3.DatabaseError as exc:
                raise UserError(f"--db {self.path}: {exc}; pass another --db path.") from exc

    def _open_read_only(self) -> None:
        """Open for reading only: as immutable, so SQLite needs no -wal or -shm file beside it."""
        self.read_only = True
        self.db = sqlite_utils.Database(sqlite3.connect(f"file:{self.path}?immutable=1", uri=True))
        version = self.meta("schema_version") if META_TABLE in self.db.table_names() else None
        if version != str(SCHEMA_VERSION):
            raise UserError(
                f"--db {self.path} is read-only and was written by another qdepth-bench (schema {version}, this one "
                f"reads {SCHEMA_VERSION}); copy it to a writable folder and open it there once to upgrade it."
            )

    def meta(self, key: str) -> str | None:
        return meta(self.db, key)

    # ---------------------------------------------------------------------------------------------- runs

    @staticmethod
    def run_id_for(key: dict[str, Any]) -> str:
        """The id of a run key: policy identity + suite + protocol hash + seed."""
        return stable_hash(key, 12)

    def start_run(self, record: dict[str, Any]) -> str:
        """Create the run, or mark an existing one with the same key as running again; return its id."""
        run_id = record["run_id"]
        now = time.time()
        with self.db.conn:
            if self.db.table("runs").count_where("run_id = ?", [run_id]):
                self.db.table("runs").update(
                    run_id,
                    {
                        "status": "running",
                        "started_at": now,
                        "finished_at": None,
                        "command": record.get("command", ""),
                        "episodes_requested": record.get("episodes_requested"),
                        "git_commit": record.get("git_commit", ""),
                        "package_versions": record.get("package_versions", ""),
                    },
                )
            else:
                self.db.table("runs").insert({**record, "created_at": now, "started_at": now, "status": "running"})
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        """Mark the run ended; its `actions_per_call` becomes the fewest actions any of its episodes executed
        per policy call (what happened, whatever the protocol asked for)."""
        fewest = self.db.execute("select min(actions_per_call) from episodes where run_id = ?", [run_id]).fetchone()[0]
        with self.db.conn:
            self.db.table("runs").update(
                run_id, {"status": status, "finished_at": time.time(), "actions_per_call": fewest}
            )

    def run(self, run_id: str) -> dict[str, Any]:
        matches = list(self.db.query("select * from runs where run_id like ?", [run_id + "%"]))
        if not matches:
            raise UserError(f"no run '{run_id}' in {self.path}; `qdepth-bench runs list` shows the run ids.")
        if len(matches) > 1:
            raise UserError(f"run id prefix '{run_id}' matches {len(matches)} runs; give more characters.")
        return matches[0]

    def runs(self, suite: str | None = None, policy: str | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if suite:
            where.append("suite = ?")
            params.append(suite)
        if policy:
            where.append("policy_name = ?")
            params.append(policy)
        sql = "select * from runs" + (" where " + " and ".join(where) if where else "") + " order by started_at"
        return list(self.db.query(sql, params))

    def delete_run(self, run_id: str) -> int:
        """Delete a run with its episodes, sessions and claims in one transaction; returns the number of
        episodes removed."""
        with self.db.conn:
            n = self.db.table("episodes").count_where("run_id = ?", [run_id])
            for table in ("episodes", "episode_claims", "run_sessions", "runs"):
                self.db.execute(f"delete from {table} where run_id = ?", [run_id])
        return n

    def discard_empty_runs(self, keep: set[str]) -> list[str]:
        """Delete the runs outside `keep` that recorded no episode (what a start stopped by Ctrl-C or SIGTERM
        leaves); their ids."""
        empty = [
            r["run_id"]
            for r in self.runs()
            if r["run_id"] not in keep and not self.db.table("episodes").count_where("run_id = ?", [r["run_id"]])
        ]
        for run_id in empty:
            self.delete_run(run_id)
        return empty

    # ------------------------------------------------------------------------------------------ episodes

    def episode_states(self, run_id: str) -> dict[tuple[int, int, int], tuple[str, int]]:
        """(task, episode index, repeat) -> (status, attempts) of every recorded episode of a run; a transient
        error reads as status 'transient' (it is run again whatever its attempts)."""
        rows = self.db.query(
            "select task_id, episode_index, repeat, status, attempts, error_kind from episodes where run_id = ?",
            [run_id],
        )
        return {
            (r["task_id"], r["episode_index"], r["repeat"]): (
                "transient" if r["status"] == "error" and r["error_kind"] == "transient" else r["status"],
                r["attempts"] or 1,
            )
            for r in rows
        }

    def errors(self, run_id: str) -> list[dict[str, Any]]:
        """The run's episodes that ended in an error, with `place` = (task, episode index, repeat)."""
        rows = self.db.query(
            "select task_id, episode_index, repeat, error, error_kind from episodes where run_id = ? and "
            "status = 'error' order by task_id, episode_index, repeat",
            [run_id],
        )
        return [{**r, "place": (r["task_id"], r["episode_index"], r["repeat"])} for r in rows]

    def record_episode(self, record: dict[str, Any]) -> None:
        """Write one finished episode atomically (an error row is replaced when a retry finishes)."""
        if record["status"] not in OUTCOMES:
            raise ValueError(f"episode status must be one of {OUTCOMES}")
        row = {
            "repeat": 0,
            **record,
            "variant": json.dumps(record.get("variant") or {}, sort_keys=True),
            "finished_at": time.time(),
        }
        with self.db.conn:
            self.db.table("episodes").upsert(row, pk=EPISODE_PRIMARY_KEY)

    def episodes_frame(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Episodes joined with their run's policy, setting and protocol flags, as a DataFrame."""
        # run_machines: how many machine fingerprints recorded the run's episodes (rows older than sessions: 1)
        sql = (
            "with machines as (select run_id, count(distinct fingerprint_hash) as n from run_sessions where "
            "session_id in (select distinct session_id from episodes where session_id is not null) group by run_id) "
            "select e.*, r.policy_name, r.policy_config_hash, r.policy_checkpoint_hash, r.setting, "
            "r.standard_protocol, r.protocol_hash, r.backend, r.replan_steps, "
            "r.status as run_status, r.started_at as run_started_at, coalesce(m.n, 1) as run_machines "
            "from episodes e join runs r using (run_id) left join machines m using (run_id)"
        )
        params: list[Any] = []
        if run_ids is not None:
            ids = list(run_ids)
            sql += f" where e.run_id in ({','.join('?' * len(ids))})"
            params = ids
        return pd.DataFrame(
            list(self.db.query(sql, params)),
            columns=[
                *EPISODE_COLUMNS,
                "policy_name",
                "policy_config_hash",
                "policy_checkpoint_hash",
                "setting",
                "standard_protocol",
                "protocol_hash",
                "backend",
                "replan_steps",
                "run_status",
                "run_started_at",
                "run_machines",
            ],
        )

    # ---------------------------------------------------------------------------------------- references

    def load_references(self, rows: list[dict[str, Any]], digest: str) -> None:
        """Replace the reference rows when their source files changed (digest differs); a read-only database
        keeps the ones it has."""
        if self.read_only or self.meta("reference_digest") == digest:
            return
        with self.db.conn:
            self.db.execute("delete from reference_results")
            self.db.table("reference_results").insert_all(rows)
            self.db.table(META_TABLE).upsert({"key": "reference_digest", "value": digest}, pk="key")

    def references_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.db.query("select * from reference_results")), columns=list(REFERENCE_COLUMNS))

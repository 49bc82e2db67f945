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
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import sqlite_utils

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.fingerprint import fingerprint_hash, machine_hash
from qdepth_bench.core.hashing import stable_hash

#: 2: episodes.metrics (backend-specific outcomes as JSON); 3: how chunks were executed (runs.replan_steps,
#: runs.actions_per_call, episodes.policy_calls, episodes.actions_per_call); 4: episodes.timing (seconds
#: per phase as JSON, `eval.timing`); 5: run_sessions (who recorded which episodes, on what machine, alive
#: until when), episodes.session_id, episodes.repeat in the episode key (`run --repeats`), episodes.error_kind
#: (an error that may pass by itself is retried by every later run) and episode_claims
SCHEMA_VERSION = 5
#: what identifies an episode within its database
EPISODE_KEY = ("run_id", "task_id", "episode_index", "repeat")
META_TABLE = "qdepth_bench_meta"
DEFAULT_DB = Path("results") / "qdepth-bench.sqlite"
DB_ENV = "QDEPTH_BENCH_DB"

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
}
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
#: A session whose heartbeat is older than this has lost its owner, wherever it ran.
STALE_AFTER_S = 120.0
#: how long a process waits for another's lock on the database before giving up
BUSY_TIMEOUT_S = 30.0
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


def default_db_path() -> Path:
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB)


class RunBusy(UserError):
    """Another live process works on this run."""


def session_alive(session: dict[str, Any]) -> bool:
    """A running session's owner is alive: its process exists (same host) and its heartbeat is recent."""
    if session["status"] != "running" or time.time() - (session["heartbeat_at"] or 0.0) > STALE_AFTER_S:
        return False
    if session["host"] != socket.gethostname():
        return True
    try:
        os.kill(int(session["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def session_status(session: dict[str, Any]) -> str:
    """A session's status as it truly is: one recorded as running whose owner is gone is 'interrupted'."""
    if session["status"] == "running" and not session_alive(session):
        return "interrupted"
    return session["status"]


def _check_existing(path: Path) -> None:
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
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"--db {path} cannot be read as SQLite ({exc}); pass another --db path.") from exc
    if tables and META_TABLE not in tables:
        raise UserError(f"--db {path} is a SQLite database but not a qdepth-bench one; pass another --db path.")
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(f"--db {path} was written by a newer qdepth-bench (schema {version}); upgrade qdepth-bench.")


class Store:
    """The results database at `path`, created with its schema on first use. A database that cannot be
    written (a read-only filesystem, a file without write permission) opens read-only, for reports."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.read_only = False
        if self.path.exists():
            _check_existing(self.path)
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
                self._ensure_schema()
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

    # -------------------------------------------------------------------------------------------- schema

    def _ensure_schema(self) -> None:
        with self.db.conn:
            self.db.table(META_TABLE).create({"key": str, "value": str}, pk="key", if_not_exists=True)
            self.db.table("runs").create(RUN_COLUMNS, pk="run_id", if_not_exists=True)
            self.db.table("episodes").create(
                EPISODE_COLUMNS,
                pk=EPISODE_KEY,
                not_null={"repeat"},
                defaults={"repeat": 0},
                foreign_keys=[("run_id", "runs", "run_id")],
                if_not_exists=True,
            )
            self.db.table("reference_results").create(REFERENCE_COLUMNS, if_not_exists=True)
            self.db.table("run_sessions").create(SESSION_COLUMNS, pk="session_id", if_not_exists=True)
            self.db.table("episode_claims").create(
                {
                    "run_id": str,
                    "task_id": int,
                    "episode_index": int,
                    "repeat": int,
                    "session_id": str,
                    "claimed_at": float,
                },
                pk=EPISODE_KEY,
                if_not_exists=True,
            )
            for table, columns in (("runs", RUN_COLUMNS), ("episodes", EPISODE_COLUMNS)):  # older schemas
                for name in sorted(set(columns) - set(self.db.table(table).columns_dict)):
                    self.db.table(table).add_column(
                        name, columns[name], not_null_default=0 if name == "repeat" else None
                    )
            if tuple(self.db.table("episodes").pks) != EPISODE_KEY:  # schema < 5: the repeat joins the key
                self.db.table("episodes").transform(pk=EPISODE_KEY)
            if self.meta("schema_version") != str(SCHEMA_VERSION):  # reading a report leaves the file as it was
                self.db.table(META_TABLE).upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")
        self.db.table("episodes").create_index(["run_id", "status"], if_not_exists=True)
        self.db.table("run_sessions").create_index(["run_id"], if_not_exists=True)
        self.db.table("episodes").create_index(["session_id"], if_not_exists=True)

    def meta(self, key: str) -> str | None:
        rows = list(self.db.query(f"select value from {META_TABLE} where key = ?", [key]))
        return rows[0]["value"] if rows else None

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

    # ------------------------------------------------------------------------------------------ sessions

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One write transaction taken at once (BEGIN IMMEDIATE): a check and the write it decides are atomic
        against every other process on this database."""
        conn = self.db.conn
        conn.execute("begin immediate")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def start_session(self, run_id: str, command: str, fingerprint: dict[str, Any], join: bool = False) -> str:
        """Take the run for this process, on the machine `fingerprint` describes; return the session id.

        A run another live process works on is refused (`RunBusy`, naming that process) unless `join`: then
        both work on it, each taking only episodes it has claimed (`claim`)."""
        now = time.time()
        session_id = stable_hash({"run": run_id, "host": socket.gethostname(), "pid": os.getpid(), "at": now}, 12)
        with self._exclusive():
            owners = [s for s in self.sessions(run_id) if session_alive(s)]
            if owners and not join:
                owner = owners[0]
                since = time.strftime("%H:%M:%S", time.localtime(owner["started_at"]))
                raise RunBusy(
                    f"run {run_id} is being run by pid {owner['pid']} on {owner['host']} since {since} "
                    f"(`{owner['command']}`); wait for it, stop it, or pass --join to work on it together."
                )
            self.db.table("run_sessions").insert(
                {
                    "session_id": session_id,
                    "run_id": run_id,
                    "command": command,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "started_at": now,
                    "heartbeat_at": now,
                    "status": "running",
                    "fingerprint": json.dumps(fingerprint, sort_keys=True),
                    "fingerprint_hash": fingerprint_hash(fingerprint),
                    "machine_hash": machine_hash(fingerprint),
                }
            )
        return session_id

    def others_alive(self, run_id: str, session_id: str) -> bool:
        """Whether a process other than this session's still works on the run."""
        return any(s["session_id"] != session_id and session_alive(s) for s in self.sessions(run_id))

    def claim(self, run_id: str, place: tuple[int, int, int], session_id: str) -> bool:
        """Claim one episode for this session, atomically: False when it is recorded with an outcome, or claimed
        by another session that is alive. A claim of a dead session is taken over."""
        task_id, episode_index, repeat = place
        key = [run_id, task_id, episode_index, repeat]
        where = "run_id = ? and task_id = ? and episode_index = ? and repeat = ?"
        with self._exclusive():
            done = self.db.execute(f"select status from episodes where {where}", key).fetchone()
            if done is not None and done[0] != "error":
                return False
            held = self.db.execute(f"select session_id from episode_claims where {where}", key).fetchone()
            if held is not None and held[0] != session_id:
                owner = list(self.db.query("select * from run_sessions where session_id = ?", [held[0]]))
                if owner and session_alive(owner[0]):
                    return False
            self.db.execute(
                "insert or replace into episode_claims values (?, ?, ?, ?, ?, ?)", [*key, session_id, time.time()]
            )
        return True

    def set_session_fingerprint(self, session_id: str, fingerprint: dict[str, Any]) -> None:
        """Complete a session's fingerprint (the renderer is known once a worker has built its env)."""
        with self.db.conn:
            self.db.table("run_sessions").update(
                session_id,
                {
                    "fingerprint": json.dumps(fingerprint, sort_keys=True),
                    "fingerprint_hash": fingerprint_hash(fingerprint),
                },
            )

    def heartbeat(self, session_id: str) -> None:
        with self.db.conn:
            self.db.execute("update run_sessions set heartbeat_at = ? where session_id = ?", [time.time(), session_id])

    def end_session(self, session_id: str, status: str) -> None:
        """Close the session and drop its claims (its recorded episodes stay)."""
        now = time.time()
        with self.db.conn:
            self.db.table("run_sessions").update(session_id, {"status": status, "ended_at": now, "heartbeat_at": now})
            self.db.execute("delete from episode_claims where session_id = ?", [session_id])

    def sessions(self, run_id: str) -> list[dict[str, Any]]:
        """The run's sessions, oldest first, each with `episodes`: how many of the run's rows it recorded."""
        return list(
            self.db.query(
                "select s.*, (select count(*) from episodes e where e.session_id = s.session_id) as episodes "
                "from run_sessions s where s.run_id = ? order by s.started_at",
                [run_id],
            )
        )

    def session_of_episodes(
        self, run_id: str, keys: Iterable[tuple[int, int, int]]
    ) -> dict[tuple[int, int, int], str | None]:
        """(task, episode index, repeat) -> the session that recorded it (None: before sessions were kept)."""
        rows = self.db.query(
            "select task_id, episode_index, repeat, session_id from episodes where run_id = ?", [run_id]
        )
        recorded = {(r["task_id"], r["episode_index"], r["repeat"]): r["session_id"] for r in rows}
        return {key: recorded.get(key) for key in keys}

    def run_status(self, run: dict[str, Any], sessions: list[dict[str, Any]] | None = None) -> str:
        """The run's status as it truly is: a 'running' run none of whose sessions is alive is 'interrupted'
        (`sessions`: the run's, when the caller has them already)."""
        if run["status"] != "running":
            return run["status"]
        if sessions is None:
            sessions = self.sessions(run["run_id"])
        return "running" if any(session_alive(s) for s in sessions) else "interrupted"

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
        """Delete a run and its episodes in one transaction; returns the number of episodes removed."""
        with self.db.conn:
            n = self.db.table("episodes").count_where("run_id = ?", [run_id])
            self.db.execute("delete from episodes where run_id = ?", [run_id])
            self.db.execute("delete from runs where run_id = ?", [run_id])
        return n

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
            self.db.table("episodes").upsert(row, pk=EPISODE_KEY)

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


#: the tables `salvage` copies, parents first (claims are not worth keeping: their sessions are over)
SALVAGED_TABLES = ("runs", "run_sessions", "episodes")


def salvage(damaged: Path, out: Path) -> dict[str, tuple[int, int]]:
    """Copy every row of `damaged` that can still be read into a new database at `out`, row by row, so one
    bad page loses only the rows on it; returns {table: (rows copied, rows unreadable)}. The damaged file
    is opened read-only and never written."""
    if out.exists():
        raise UserError(f"--out {out} exists; salvage writes a new database, give a path that does not exist.")
    source = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    target = Store(out)
    counts: dict[str, tuple[int, int]] = {}
    try:
        for table in SALVAGED_TABLES:
            try:
                columns = [r[1] for r in source.execute(f"pragma table_info({table})")]
                last = source.execute(f"select max(rowid) from {table}").fetchone()[0] or 0
            except sqlite3.DatabaseError:
                counts[table] = (0, -1)  # the table's own structure is unreadable
                continue
            keep = [c for c in columns if c in target.db.table(table).columns_dict]
            copied = lost = 0
            for rowid in range(1, last + 1):
                try:
                    row = source.execute(f"select {', '.join(keep)} from {table} where rowid = ?", [rowid]).fetchone()
                except sqlite3.DatabaseError:
                    lost += 1
                    continue
                if row is not None:
                    with target.db.conn:
                        target.db.table(table).insert(dict(zip(keep, row, strict=True)), replace=True)
                    copied += 1
            counts[table] = (copied, lost)
    finally:
        source.close()
    return counts

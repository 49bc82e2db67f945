"""Who works on a run: sessions (one per invocation, with its owner's host and pid, a heartbeat and the
machine it runs on), the lease that refuses a second process on a run unless it joins, and the claims by which
processes that share a run split its episodes.

A session is alive while its heartbeat is recent and, on this host, its process exists (`os.kill(pid, 0)`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.fingerprint import fingerprint_hash, machine_hash
from qdepth_bench.core.hashing import stable_hash

#: A session whose heartbeat is older than this has lost its owner, wherever it ran.
STALE_AFTER_S = 120.0


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


class SessionsMixin:
    """The `Store`'s sessions and claims (it holds the database as `db`)."""

    db: sqlite_utils.Database

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

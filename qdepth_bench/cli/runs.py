"""`qdepth-bench runs list|show|delete`: the recorded runs of a database."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qdepth_bench.cli.common import DbOption, console, err_console, open_store, print_views, runs_app
from qdepth_bench.core.errors import UserError
from qdepth_bench.core.fingerprint import differences
from qdepth_bench.eval.timing import bound, split
from qdepth_bench.report.lineage import run_lineage
from qdepth_bench.report.tables import build_tables
from qdepth_bench.results.salvage import salvage
from qdepth_bench.results.sessions import session_status
from qdepth_bench.results.store import Store, default_db_path


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""


@runs_app.command("list")
def runs_list(
    suite: Annotated[str | None, typer.Option(help="only this suite")] = None,
    policy: Annotated[str | None, typer.Option(help="only this policy")] = None,
    db: DbOption = None,
) -> None:
    """Recorded runs, oldest first."""
    store = open_store(db)
    rows = store.runs(suite, policy)
    if not rows:
        err_console.print(f"no runs in {store.path}.")
        return
    out = Table("run", "suite", "policy", "status", "episodes", "success", "errors", "started", "protocol", "machine")
    for r in rows:
        states = store.episode_states(r["run_id"])
        n_success = sum(1 for s, _ in states.values() if s == "success")
        n_error = sum(1 for s, _ in states.values() if s in ("error", "transient"))
        sessions = store.sessions(r["run_id"])
        out.add_row(
            r["run_id"],
            r["suite"],
            r["policy_name"],
            store.run_status(r, sessions),
            str(len(states)),
            str(n_success),
            str(n_error),
            _when(r["started_at"]),
            "standard" if r["standard_protocol"] else "non-standard",
            _machines(sessions),
        )
    console.print(out)


def _machines(sessions: list[dict]) -> str:
    """The fingerprint hash of the machine that recorded the run's episodes; several joined by '+'."""
    hashes = list(dict.fromkeys(s["fingerprint_hash"][:8] for s in sessions if s["episodes"]))
    return " + ".join(hashes) if hashes else "–"


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="run id or unique prefix")], db: DbOption = None) -> None:
    """Everything recorded about one run: key, protocol, provenance, per-task outcomes."""
    store = open_store(db)
    record = store.run(run_id)
    for key in (
        "run_id",
        "suite",
        "backend",
        "policy_name",
        "policy_config_hash",
        "policy_checkpoint_hash",
        "setting",
        "protocol_hash",
        "standard_protocol",
        "replan_steps",
        "actions_per_call",
        "seed",
        "git_commit",
        "host",
        "command",
    ):
        console.print(f"[bold]{key}[/bold]: {record[key]}")
    console.print(f"[bold]status[/bold]: {store.run_status(record)}")
    console.print(
        f"[bold]started[/bold]: {_when(record['started_at'])}  [bold]finished[/bold]: {_when(record['finished_at'])}"
    )
    for key in ("policy_config", "protocol", "package_versions"):
        console.print(f"[bold]{key}[/bold]: {json.dumps(json.loads(record[key]), sort_keys=True)}")
    lineage = run_lineage(record)
    if lineage:
        console.print(f"[bold]lineage[/bold]: {lineage}", highlight=False)
    _print_sessions(store, record)
    _print_timing(store, record["run_id"])
    print_views(build_tables(store, record["suite"], run_ids=[record["run_id"]], reference=False), "rich")


def _print_sessions(store: Store, record: dict) -> None:
    """Each invocation that worked on the run, and the machine fingerprint of each one that recorded episodes."""
    sessions = store.sessions(record["run_id"])
    older = len(store.episode_states(record["run_id"])) - sum(s["episodes"] for s in sessions)
    out = Table("session", "started", "ended", "status", "host", "pid", "machine", "episodes", title="sessions")
    for s in sessions:
        status = session_status(s)
        out.add_row(
            s["session_id"],
            _when(s["started_at"]),
            _when(s["ended_at"]),
            status,
            s["host"],
            str(s["pid"]),
            s["fingerprint_hash"][:8],
            str(s["episodes"]),
        )
    if sessions:
        console.print(out)
    if older > 0:
        console.print(f"{older} episodes were recorded before sessions were kept (host: {record['host']}).")
    first: dict | None = None
    shown: set[str] = set()
    for s in sessions:
        if not s["episodes"] or s["fingerprint_hash"] in shown:
            continue
        shown.add(s["fingerprint_hash"])
        fingerprint = json.loads(s["fingerprint"])
        if first is None:  # the first machine in full, every other one as its differences from it
            first = {"hash": s["fingerprint_hash"][:8], "fingerprint": fingerprint}
            console.print(f"[bold]machine {first['hash']}[/bold]:")
            for key, value in _flat_fields(fingerprint):
                console.print(f"  {key}: {value}", highlight=False)
            continue
        console.print(f"[bold]machine {s['fingerprint_hash'][:8]}[/bold], where it differs from {first['hash']}:")
        for key, then, now in differences(first["fingerprint"], fingerprint):
            console.print(f"  {key}: {now} (there: {then})", highlight=False)


def _flat_fields(fingerprint: dict) -> list[tuple[str, str]]:
    """The fingerprint's fields as printable lines (packages in one line: they are also under package_versions)."""
    lines = []
    for key, value in fingerprint.items():
        if isinstance(value, dict) and key != "packages":
            lines += [
                (f"{key}.{k}", json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in value.items()
            ]
        else:
            lines.append((key, json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)))
    return lines


def _print_timing(store: Store, run_id: str) -> None:
    """Where the run's time went, summed over its episodes (those recorded before timings were kept have none)."""
    rows = list(store.db.query("select timing, steps from episodes where run_id = ? and timing is not null", [run_id]))
    if not rows:
        return
    phases = split(json.loads(r["timing"]) for r in rows)
    steps = sum(r["steps"] or 0 for r in rows)
    whole = sum(phases.values()) or 1e-9
    out = Table("phase", "episode-seconds", "share", "ms per env step", title=f"time ({bound(phases)}-bound)")
    for phase, seconds in phases.items():
        per_step = f"{1000 * seconds / steps:.1f}" if steps else ""
        out.add_row(phase, f"{seconds:.1f}", f"{seconds / whole:.0%}", per_step)
    console.print(out)


@runs_app.command("delete")
def runs_delete(
    run_id: Annotated[str, typer.Argument(help="run id or unique prefix")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    db: DbOption = None,
) -> None:
    """Delete a run and its episodes."""
    store = open_store(db)
    record = store.run(run_id)
    if not yes and not typer.confirm(f"delete run {record['run_id']} ({record['policy_name']} on {record['suite']})?"):
        raise typer.Exit(1)
    n = store.delete_run(record["run_id"])
    console.print(f"deleted run {record['run_id']} and its {n} episodes.")


@runs_app.command("salvage")
def runs_salvage(
    out: Annotated[Path, typer.Option(help="the new database to copy every readable row into")],
    db: DbOption = None,
) -> None:
    """Copy every readable run, session and episode of a damaged database into a new one (the damaged file is
    only read). Resume the runs from the new file with --db; a lost episode is simply run again."""
    source = db or default_db_path()
    if not source.is_file():
        raise UserError(f"--db {source} does not exist; give the damaged database's path.")
    counts = salvage(source, out)
    for table, (copied, lost) in counts.items():
        text = "structure unreadable, nothing copied" if lost < 0 else f"{copied} rows copied, {lost} unreadable"
        console.print(f"{table}: {text}", highlight=False)
    console.print(f"wrote {out}; use it with --db {out}")

"""`qdepth-bench verify RUN`: re-run recorded episodes of a finished run into a scratch database and say how
many came out the same, how the success rate moved, and which fingerprint fields set the machines apart."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.table import Table

from qdepth_bench.cli.common import DEFAULT_WORKERS, DbOption, app, console, err_console, open_store
from qdepth_bench.cli.progress import RunProgress, command_line
from qdepth_bench.core.errors import UserError
from qdepth_bench.core.fingerprint import differences
from qdepth_bench.core.policy import Policy
from qdepth_bench.core.protocol import SuiteSpec
from qdepth_bench.eval.engine import EngineOptions, execute
from qdepth_bench.eval.plan import Selection, plan_run
from qdepth_bench.eval.replay import policy_of, sample_episodes, suite_of, version_differences
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.report.agreement import Agreement, compare
from qdepth_bench.results.store import Store


def _count(text: str) -> int | None:
    if text == "all":
        return None
    try:
        k = int(text)
    except ValueError:
        raise UserError(f"--episodes '{text}' is neither a number nor 'all'.") from None
    if k < 1:
        raise UserError(f"--episodes must be at least 1 or 'all' (got {k}).")
    return k


@app.command()
def verify(
    run_id: Annotated[str, typer.Argument(help="run id or unique prefix of a recorded run")],
    episodes: Annotated[
        str, typer.Option(help="recorded episodes to re-run, stratified over tasks and outcomes, or 'all'")
    ] = "20",
    workers: Annotated[int, typer.Option(help="env worker processes")] = DEFAULT_WORKERS,
    scratch: Annotated[
        Path | None, typer.Option(help="database for the re-run (default: a temporary file, removed afterwards)")
    ] = None,
    any_versions: Annotated[
        bool, typer.Option("--any-versions", help="re-run even where package versions differ from the recording")
    ] = False,
    db: DbOption = None,
) -> None:
    """Re-run recorded episodes of a run (never modified) and report how many agree, with an exact McNemar test.

    Exits 0 whether or not episodes differ: it is a measurement."""
    k = _count(episodes)
    if workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers}).")
    store = open_store(db)
    run = store.run(run_id)
    if scratch is not None and scratch.resolve() == store.path.resolve():
        raise UserError("--scratch must be another database than --db: verify never writes to the recorded run.")
    drift = version_differences(run)
    if drift and not any_versions:
        name, then, now = drift[0]
        raise UserError(
            f"run {run['run_id']} was recorded with {name} {then or 'absent'}, this environment has {now or 'none'}"
            f"{f' (and {len(drift) - 1} more)' if len(drift) > 1 else ''}; install the recorded versions, or pass "
            "--any-versions to measure across versions."
        )
    recorded = store.episodes_frame([run["run_id"]])
    keys = sample_episodes(recorded, k)
    if not keys:
        raise UserError(f"run {run['run_id']} has no scored episodes to verify.")
    spec = suite_of(run)
    policy = policy_of(run)
    try:
        with tempfile.TemporaryDirectory(prefix="qdepth-verify-") as folder:
            target = Store(scratch or Path(folder) / "verify.sqlite")
            remeasured, machine = _rerun(target, run, spec, policy, keys, workers)
    finally:
        policy.close()
    agreement = compare(recorded, remeasured)
    _print_agreement(agreement)
    _print_machines(store, run, keys, machine, drift)


def _rerun(
    target: Store,
    run: dict[str, Any],
    spec: SuiteSpec,
    policy: Policy,
    keys: list[tuple[int, int, int]],
    workers: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run the episodes `keys` of the recorded run into `target`; its episodes and this machine's fingerprint."""
    tasks = tuple(sorted({t for t, _, _ in keys}))
    n, repeats = max(i for _, i, _ in keys) + 1, max(r for _, _, r in keys) + 1
    selection = Selection(tasks, n, repeats)
    plan = plan_run(target, spec, make_backend(spec), policy, selection, command_line(), only=set(keys))
    if plan.run_id != run["run_id"]:
        raise UserError(f"the re-run's key ({plan.run_id}) is not run {run['run_id']}'s: its identity changed.")
    console.print(
        f"[bold]verify[/bold] run {run['run_id']} · {spec.name} · policy {run['policy_name']} · "
        f"{len(plan.pending)} recorded episodes re-run into a scratch database"
    )
    progress = RunProgress()
    with progress.running(plan) as on_episode:
        stats = execute(target, plan, EngineOptions(workers=min(workers, len(plan.pending))), on_episode)
    progress.ran(plan, stats)
    session = target.sessions(run["run_id"])[-1]
    return target.episodes_frame([run["run_id"]]), json.loads(session["fingerprint"])


def _print_agreement(agreement: Agreement) -> None:
    out = Table("task", "episode", "repeat", "recorded", "steps", "re-measured", "steps", "same", title="per episode")
    for p in agreement.pairs:
        same = "yes" if p.agrees else "[red]no[/red]"
        out.add_row(
            str(p.task_id),
            str(p.episode_index),
            str(p.repeat),
            p.recorded,
            str(p.recorded_steps),
            p.remeasured,
            str(p.remeasured_steps),
            same,
        )
    console.print(out)
    if agreement.errors:
        keys = ", ".join(f"task {t} episode {i}" + (f" repeat {r}" if r else "") for t, i, r in agreement.errors)
        err_console.print(f"{len(agreement.errors)} re-run episodes ended in an error and are left out: {keys}.")
    if not agreement.n:
        return
    low, high = agreement.interval
    rate = 100 * agreement.agreeing / agreement.n
    console.print(
        f"agreement (outcome and steps): {agreement.agreeing}/{agreement.n} = {rate:.1f}% "
        f"[95% Wilson {100 * low:.1f}, {100 * high:.1f}]",
        markup=False,
        highlight=False,
    )
    console.print(
        f"success: recorded {agreement.recorded_successes}/{agreement.n}, re-measured "
        f"{agreement.remeasured_successes}/{agreement.n} on the same episodes; exact McNemar "
        f"p = {agreement.mcnemar_p:.3g} ({agreement.only_recorded} succeeded only when recorded, "
        f"{agreement.only_remeasured} only when re-measured)",
        highlight=False,
    )


def _print_machines(
    store: Store,
    run: dict[str, Any],
    keys: list[tuple[int, int, int]],
    machine: dict[str, Any],
    drift: list[tuple[str, str | None, str | None]],
) -> None:
    """The fingerprint fields in which this machine differs from each machine that recorded the episodes."""
    for name, then, now in drift:
        console.print(f"package {name}: recorded {then or 'absent'}, here {now or 'absent'}", highlight=False)
    if not drift:
        tracked = len(json.loads(run["package_versions"] or "{}"))
        console.print(f"package versions: the {tracked} tracked packages are as recorded", highlight=False)
    recorded_by = store.session_of_episodes(run["run_id"], keys)
    sessions = {s["session_id"]: s for s in store.sessions(run["run_id"])}
    older = sum(1 for k in keys if recorded_by.get(k) is None)
    if older:
        console.print(
            f"{older} of these episodes were recorded before machine fingerprints were kept, on host "
            f"{run['host']}: only package versions can be compared for them.",
            highlight=False,
        )
    for session_id in sorted({s for s in recorded_by.values() if s is not None}):
        session = sessions[session_id]
        diff = differences(json.loads(session["fingerprint"]), machine)
        count = sum(1 for s in recorded_by.values() if s == session_id)
        where = f"machine {session['fingerprint_hash'][:8]} (host {session['host']}, {count} episodes)"
        if not diff:
            console.print(f"{where}: same fingerprint as this machine", highlight=False)
            continue
        console.print(f"{where} differs from this machine in:", highlight=False)
        for field, then, now in diff:
            console.print(f"  {field}: recorded {then}, here {now}", highlight=False)

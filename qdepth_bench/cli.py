"""The `qdepth-bench` command line. Each command parses its options, calls one function, prints.

Input errors surface as one line on stderr (`error: ...` naming the fix) and exit code 2; Ctrl-C during a
run exits 130 after saying how many episodes are safely recorded.
"""

from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .errors import UserError
from .reference import reference_rows
from .registry import make_backend, make_policy, parse_key_values, policy_entries, suite_registry
from .report.render import to_csv, to_latex, to_markdown, to_rich
from .report.tables import build_tables
from .rollout.episode import EpisodeResult
from .rollout.runner import execute, plan_run
from .store import DB_ENV, Store

# Piped output (files, CI logs) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class _UserErrorsAsOneLine(TyperGroup):
    """Every command's `UserError` becomes one line on stderr and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except UserError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(cls=_UserErrorsAsOneLine, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Benchmark vision-language-action policies on LIBERO and SIMPLER; tables and leaderboards.")
runs_app = typer.Typer(cls=_UserErrorsAsOneLine, no_args_is_help=True, help="List, show or delete recorded runs.")
app.add_typer(runs_app, name="runs")

DbOption = Annotated[Optional[Path], typer.Option("--db", help=f"results database (default: ${DB_ENV} or "
                                                  "results/qdepth-bench.sqlite)")]


class TableFormat(str, Enum):
    rich = "rich"
    markdown = "markdown"
    csv = "csv"
    latex = "latex"


def open_store(db: Path | None) -> Store:
    """Open (or create) the database and make sure it holds the current reference numbers."""
    store = Store(db)
    rows, digest = reference_rows()
    store.load_references(rows, digest)
    return store


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="suite or group: libero, libero_object, ... (see `suites`)")],
    policy: Annotated[str, typer.Option("--policy", "-p", help="registered name, module:Class or policy YAML")],
    policy_arg: Annotated[Optional[list[str]], typer.Option("--policy-arg", "-a", help="policy option key=value")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="task ids, e.g. 0,1 or 0-4 (default: all)")] = None,
    episodes: Annotated[Optional[int], typer.Option(help="episodes per task (default: the protocol's trials)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="env seed (default: the protocol's; others are non-standard)")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="override the protocol's max policy steps")] = None,
    video: Annotated[Optional[Path], typer.Option(help="write an mp4 per episode under this folder")] = None,
    db: DbOption = None,
) -> None:
    """Evaluate a policy on a suite; re-running the same command resumes it."""
    store = open_store(db)
    specs = suite_registry().resolve(suite)
    agent = make_policy(policy, parse_key_values(policy_arg or []))
    command = shlex.join(["qdepth-bench", *sys.argv[1:]])
    overrides = {k: v for k, v in (("env_seed", seed), ("max_steps", max_steps)) if v is not None}
    if max_steps is not None and max_steps < 1:
        raise UserError(f"--max-steps must be at least 1 (got {max_steps}).")
    try:
        for spec in specs:
            spec = spec.with_overrides(overrides)
            backend = make_backend(spec)
            plan = plan_run(store, spec, backend, agent, tasks, episodes, command)
            done = len(plan.episodes) - len(plan.pending)
            console.print(f"[bold]{spec.name}[/bold] · policy [bold]{agent.name}[/bold] · run {plan.run_id} · "
                          f"{len(plan.episodes)} episodes ({done} already recorded)"
                          + ("" if spec.is_standard() else " · [yellow]non-standard protocol[/yellow]"))
            _execute_with_progress(store, plan, video)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished episodes are saved in {store.path}; "
                          "run the same command again to continue.")
        raise typer.Exit(130) from None
    finally:
        agent.close()
    _print_views(build_tables(store, suite), TableFormat.rich)


def _execute_with_progress(store: Store, plan, video: Path | None) -> None:
    counts = {"success": 0, "failure": 0, "error": 0, "steps": 0}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as progress:
        bar = progress.add_task(plan.spec.name, total=len(plan.pending), stats="")

        def on_episode(result: EpisodeResult) -> None:
            counts[result.status] += 1
            counts["steps"] += result.steps
            scored = counts["success"] + counts["failure"]
            rate = f"{100 * counts['success'] / scored:.1f}%" if scored else "–"
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(bar, advance=1, stats=f"success {rate} · errors {counts['error']} · "
                                                  f"{counts['steps'] / elapsed:.1f} steps/s")
            if result.status == "error":
                progress.console.print(f"[red]episode {result.episode.key} error:[/red] {result.error}")

        execute(store, plan, video, on_episode)


def _print_views(views, fmt: TableFormat) -> None:
    if fmt is TableFormat.rich:
        for table in to_rich(views):
            console.print(table)
    else:
        render = {TableFormat.markdown: to_markdown, TableFormat.csv: to_csv, TableFormat.latex: to_latex}[fmt]
        sys.stdout.write(render(views))


@app.command()
def table(
    suite: Annotated[Optional[str], typer.Argument(help="suite or group (default: every table with rows)")] = None,
    policies: Annotated[Optional[str], typer.Option(help="comma-separated policy names to show")] = None,
    run_ids: Annotated[Optional[str], typer.Option("--runs", help="comma-separated run ids (default: latest)")] = None,
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="show the paper's rows")] = True,
    fmt: Annotated[TableFormat, typer.Option("--format", "-f", case_sensitive=False)] = TableFormat.rich,
    db: DbOption = None,
) -> None:
    """Success rates per suite/task with n and 95% Wilson intervals, beside the paper's published numbers."""
    store = open_store(db)
    views = build_tables(store, suite, _split(policies), _split(run_ids), reference)
    if not views:
        err_console.print(f"no results in {store.path}" + (f" for {suite}" if suite else "")
                          + "; record some with `qdepth-bench run SUITE --policy NAME`.")
        return
    _print_views(views, fmt)


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@app.command()
def policies() -> None:
    """List the registered policies."""
    out = Table("name", "class", "description", title="policies")
    for entry in sorted(policy_entries().values(), key=lambda e: e.name):
        out.add_row(entry.name, entry.target, entry.description)
    console.print(out)


@app.command()
def suites() -> None:
    """List the registered suites with their protocol settings and episode counts."""
    registry = suite_registry()
    out = Table("suite", "backend", "tasks", "episodes/task", "episodes", "max steps", "aliases", title="suites")
    for spec in registry.suites.values():
        out.add_row(spec.name, spec.backend, str(spec.n_tasks), str(spec.episodes_per_task),
                    str(spec.n_tasks * spec.episodes_per_task), str(spec.protocol["max_steps"]), ", ".join(spec.aliases))
    console.print(out)
    for group, members in registry.groups.items():
        console.print(f"group [bold]{group}[/bold] = {', '.join(members)}")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""


@runs_app.command("list")
def runs_list(
    suite: Annotated[Optional[str], typer.Option(help="only this suite")] = None,
    policy: Annotated[Optional[str], typer.Option(help="only this policy")] = None,
    db: DbOption = None,
) -> None:
    """Recorded runs, oldest first."""
    store = open_store(db)
    rows = store.runs(suite, policy)
    if not rows:
        err_console.print(f"no runs in {store.path}.")
        return
    out = Table("run", "suite", "policy", "status", "episodes", "success", "errors", "started", "protocol")
    for r in rows:
        states = store.episode_states(r["run_id"])
        n_success = sum(1 for s, _ in states.values() if s == "success")
        n_error = sum(1 for s, _ in states.values() if s == "error")
        out.add_row(r["run_id"], r["suite"], r["policy_name"], r["status"], str(len(states)), str(n_success),
                    str(n_error), _when(r["started_at"]), "standard" if r["standard_protocol"] else "non-standard")
    console.print(out)


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument(help="run id or unique prefix")], db: DbOption = None) -> None:
    """Everything recorded about one run: key, protocol, provenance, per-task outcomes."""
    store = open_store(db)
    record = store.run(run_id)
    for key in ("run_id", "suite", "backend", "policy_name", "policy_config_hash", "policy_checkpoint_hash",
                "setting", "protocol_hash", "standard_protocol", "seed", "status", "git_commit", "host", "command"):
        console.print(f"[bold]{key}[/bold]: {record[key]}")
    console.print(f"[bold]started[/bold]: {_when(record['started_at'])}  [bold]finished[/bold]: "
                  f"{_when(record['finished_at'])}")
    for key in ("policy_config", "protocol", "package_versions"):
        console.print(f"[bold]{key}[/bold]: {json.dumps(json.loads(record[key]), sort_keys=True)}")
    _print_views(build_tables(store, record["suite"], run_ids=[record["run_id"]], reference=False), TableFormat.rich)


@runs_app.command("delete")
def runs_delete(run_id: Annotated[str, typer.Argument(help="run id or unique prefix")],
                yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
                db: DbOption = None) -> None:
    """Delete a run and its episodes."""
    store = open_store(db)
    record = store.run(run_id)
    if not yes and not typer.confirm(f"delete run {record['run_id']} ({record['policy_name']} on {record['suite']})?"):
        raise typer.Exit(1)
    n = store.delete_run(record["run_id"])
    console.print(f"deleted run {record['run_id']} and its {n} episodes.")


@app.command()
def doctor(db: DbOption = None) -> None:
    """What is installed, which renderer works, where assets are, and the command that fixes what is missing."""
    from .doctor import run_checks

    checks = run_checks(db)
    out = Table("check", "status", "detail", "fix", title=f"qdepth-bench {__version__} doctor")
    for check in checks:
        out.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]missing[/red]", check.detail,
                    "" if check.ok else check.fix)
    console.print(out)
    if not all(c.ok for c in checks if c.required):
        raise typer.Exit(1)


def main() -> None:
    """Console entry point."""
    app()

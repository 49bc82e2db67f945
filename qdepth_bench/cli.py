"""The `qdepth-bench` command line. Each command parses its options, calls one function, prints.

Input errors surface as one line on stderr (`error: ...` naming the fix) and exit code 2; Ctrl-C during a
run exits 130 after saying how many episodes are safely recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .errors import UserError
from .reference import reference_rows
from .registry import make_backend, make_policy, parse_key_values, policy_entries, suite_registry
from .report.render import to_csv, to_html, to_latex, to_markdown, to_rich
from .report.tables import build_tables
from .rollout.engine import EngineOptions, execute
from .rollout.episode import EpisodeResult
from .rollout.runner import plan_run
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
depth_app = typer.Typer(cls=_UserErrorsAsOneLine, no_args_is_help=True,
                        help="Annotate demonstrations with depth, and encode it into VQ-VAE codes.")
app.add_typer(depth_app, name="depth")
data_app = typer.Typer(cls=_UserErrorsAsOneLine, no_args_is_help=True,
                       help="Generate demonstration datasets with a (scripted) policy.")
app.add_typer(data_app, name="data")
train_app = typer.Typer(cls=_UserErrorsAsOneLine, no_args_is_help=True,
                        help="Train the depth VQ-VAE or co-train a policy from a recipe (training/*.yaml).")
app.add_typer(train_app, name="train")

DbOption = Annotated[Optional[Path], typer.Option("--db", help=f"results database (default: ${DB_ENV} or "
                                                  "results/qdepth-bench.sqlite)")]


CheckpointOption = Annotated[Optional[Path], typer.Option(help="checkpoint folder (same as --policy-arg checkpoint=)")]


def policy_options(policy_arg: list[str] | None, checkpoint: Path | None) -> dict[str, str]:
    """`--policy-arg` pairs, with `--checkpoint` as the `checkpoint` option."""
    options = parse_key_values(policy_arg or [])
    if checkpoint is not None:
        options["checkpoint"] = str(checkpoint)
    return options


class Executor(str, Enum):
    local = "local"
    ray = "ray"


#: One env worker per core (each simulator step is single-threaded work), capped for memory.
DEFAULT_WORKERS = max(1, min(os.cpu_count() or 1, 8))


class GridMode(str, Enum):
    grid = "grid"
    prepackaged = "prepackaged"


class TableFormat(str, Enum):
    rich = "rich"
    markdown = "markdown"
    csv = "csv"
    latex = "latex"
    html = "html"


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
    checkpoint: CheckpointOption = None,
    tasks: Annotated[Optional[str], typer.Option(help="task ids, e.g. 0,1 or 0-4 (default: all)")] = None,
    episodes: Annotated[Optional[int], typer.Option(help="episodes per task (default: the protocol's trials)")] = None,
    backend: Annotated[Optional[str], typer.Option(help="simulator, for suites with several (simpler_widowx: "
                                                        "maniskill3 or simpler_env); recorded in the run")] = None,
    seed: Annotated[Optional[int], typer.Option(help="env seed (default: the protocol's; others are non-standard)")] = None,
    grid_mode: Annotated[Optional[GridMode], typer.Option(case_sensitive=False, help="SIMPLER: the published grid "
                         "of episodes, or SimplerEnv's prepackaged draws from the env's RNG (non-standard)")] = None,
    grid_repeats: Annotated[Optional[int], typer.Option(help="SIMPLER, with --grid-mode prepackaged: draws per grid "
                            "cell (SimplerEnv's maintainers advise 3 for the Bridge tasks)")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="override the protocol's max policy steps")] = None,
    replan_steps: Annotated[Optional[int], typer.Option(help="actions executed open-loop per policy call "
                                                              "(default: the protocol's)")] = None,
    workers: Annotated[int, typer.Option(help="env worker processes (default: one per CPU core, at most 8)")] = DEFAULT_WORKERS,
    executor: Annotated[Executor, typer.Option(case_sensitive=False, help="where env workers run")] = Executor.local,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address for --executor ray (default: "
                                                            "start a local instance; 'auto': this machine's cluster)")] = None,
    episode_timeout: Annotated[float, typer.Option(help="seconds a worker may spend on one episode before it is "
                                                        "restarted and the episode recorded as an error")] = 900.0,
    video: Annotated[Optional[Path], typer.Option(help="write an mp4 per episode under this folder")] = None,
    db: DbOption = None,
) -> None:
    """Evaluate a policy on a suite; re-running the same command resumes it."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers}).")
    for flag, value in (("--max-steps", max_steps), ("--replan-steps", replan_steps), ("--grid-repeats", grid_repeats)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value}).")
    overrides = {k: v for k, v in (("env_seed", seed), ("max_steps", max_steps), ("replan_steps", replan_steps),
                                   ("grid_mode", grid_mode and grid_mode.value), ("grid_repeats", grid_repeats))
                 if v is not None}
    specs = [(spec.with_backend(backend) if backend else spec).with_overrides(overrides)
             for spec in suite_registry().resolve(suite)]
    store = open_store(db)
    agent = make_policy(policy, policy_options(policy_arg, checkpoint))
    engine = EngineOptions(workers=workers, executor=executor.value, ray_address=ray_address,
                           episode_timeout_s=episode_timeout, video_dir=video)
    try:
        _evaluate(store, specs, agent, tasks, episodes, engine)
    finally:
        agent.close()
    _print_views(build_tables(store, suite, stand_ins=True), TableFormat.rich)  # what was just run, flagged


def _execution_note(agent, spec) -> str:
    """Said up front when the policy's chunks are shorter than the protocol's replan steps (tables mark it)."""
    chunk, replan = agent.requirements.chunk_size, int(spec.protocol["replan_steps"])
    if chunk >= replan:
        return ""
    return (f" · [yellow]chunks of {chunk} < the protocol's {replan} replan steps: it re-plans every {chunk} "
            f"(non-standard execution, marked ‡)[/yellow]")


def _evaluate(store: Store, specs, agent, tasks: str | None, episodes: int | None, engine: EngineOptions) -> None:
    """Plan and execute one policy on each suite, with a header line and a progress bar per suite."""
    command = shlex.join(["qdepth-bench", *sys.argv[1:]])
    try:
        for spec in specs:
            plan = plan_run(store, spec, make_backend(spec), agent, tasks, episodes, command)
            done = len(plan.episodes) - len(plan.pending)
            console.print(f"[bold]{spec.name}[/bold] · policy [bold]{agent.name}[/bold] · run {plan.run_id} · "
                          f"{len(plan.episodes)} episodes ({done} already recorded)"
                          + ("" if spec.is_standard() else " · [yellow]non-standard protocol[/yellow]")
                          + _execution_note(agent, spec))
            options = dataclasses.replace(engine, workers=min(engine.workers, max(len(plan.pending), 1)),
                                          log_path=store.path.parent / "logs" / f"{plan.run_id}.log")
            _execute_with_progress(store, plan, options)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished episodes are saved in {store.path}; "
                          "run the same command again to continue.")
        raise typer.Exit(130) from None


def _execute_with_progress(store: Store, plan, options: EngineOptions) -> None:
    counts = {"success": 0, "failure": 0, "error": 0, "retry": 0, "steps": 0}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as progress:
        bar = progress.add_task(plan.spec.name, total=len(plan.pending), stats="")

        def on_episode(result: EpisodeResult) -> None:
            counts["retry" if result.will_retry else result.status] += 1
            counts["steps"] += result.steps
            scored = counts["success"] + counts["failure"]
            rate = f"{100 * counts['success'] / scored:.1f}%" if scored else "–"
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(bar, advance=0 if result.will_retry else 1,
                            stats=f"success {rate} · errors {counts['error']} · retried {counts['retry']} · "
                                  f"{counts['steps'] / elapsed:.1f} env steps/s")
            if result.status == "error":
                again = " (will run it again)" if result.will_retry else ""
                progress.console.print(f"[red]episode {result.episode.key} error{again}:[/red] {escape(result.error)}",
                                       markup=True, highlight=False)

        execute(store, plan, options, on_episode)


def _print_views(views, fmt: TableFormat, out: Path | None = None) -> None:
    """Print table views (or write them to `out`) in one format."""
    if fmt is TableFormat.rich and out is None:
        for table in to_rich(views):
            console.print(table)
        return
    render = {TableFormat.markdown: to_markdown, TableFormat.csv: to_csv, TableFormat.latex: to_latex,
              TableFormat.html: to_html, TableFormat.rich: to_markdown}[fmt]
    _write(render(views), out)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}; choose another --out.") from None
    err_console.print(f"wrote {out}")


@app.command()
def table(
    suite: Annotated[Optional[str], typer.Argument(help="suite or group (default: every table with rows)")] = None,
    policies: Annotated[Optional[str], typer.Option(help="comma-separated policy names to show")] = None,
    run_ids: Annotated[Optional[str], typer.Option("--runs", help="comma-separated run ids (default: latest)")] = None,
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="show the paper's rows")] = True,
    stand_ins: Annotated[bool, typer.Option("--stand-ins", help="include episodes run with stand-in assets")] = False,
    fmt: Annotated[TableFormat, typer.Option("--format", "-f", case_sensitive=False)] = TableFormat.rich,
    db: DbOption = None,
) -> None:
    """Success rates per suite/task with n and 95% Wilson intervals, beside the paper's published numbers."""
    store = open_store(db)
    views = build_tables(store, suite, _split(policies), _split(run_ids), reference, stand_ins)
    if not any(r.kind == "ours" for v in views for r in v.rows):
        err_console.print(f"no results in {store.path}" + (f" for {suite}" if suite else "")
                          + ("; showing the published rows only" if views else "")
                          + "; record some with `qdepth-bench run SUITE --policy NAME`.")
    if views:
        _print_views(views, fmt)


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@app.command()
def ablation(
    name: Annotated[str, typer.Argument(help="ablation id (results/ablations/<id>.yaml), e.g. table6")],
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="show the published ablation")] = True,
    run_missing: Annotated[bool, typer.Option("--run", help="first run the variants that have no results")] = False,
    tasks: Annotated[Optional[str], typer.Option(help="with --run: task ids (default: all)")] = None,
    episodes: Annotated[Optional[int], typer.Option(help="with --run: episodes per task (default: the protocol's)")] = None,
    workers: Annotated[int, typer.Option(help="with --run: env worker processes")] = DEFAULT_WORKERS,
    fmt: Annotated[TableFormat, typer.Option("--format", "-f", case_sensitive=False)] = TableFormat.rich,
    out: Annotated[Optional[Path], typer.Option(help="write to this file instead of printing")] = None,
    db: DbOption = None,
) -> None:
    """An ablation table (components, per-task success, change vs the full model, paired tests)."""
    from .report.ablation import ablation_spec, build_ablation, missing_variants
    from .report.render import ablation_to_csv, ablation_to_latex, ablation_to_markdown, ablation_to_rich

    spec = ablation_spec(name)
    store = open_store(db)
    if run_missing:
        for variant in missing_variants(store, spec):
            agent = make_policy(variant.policy, {k: str(v) for k, v in variant.policy_args.items()})
            try:
                _evaluate(store, suite_registry().resolve(spec.suite), agent, tasks, episodes,
                          EngineOptions(workers=workers))
            finally:
                agent.close()
    views = build_ablation(store, spec, reference)
    if not views:
        err_console.print(f"no results in {store.path} for the variants of {spec.id} on {spec.suite} "
                          f"({', '.join(v.policy for v in spec.variants)}); record them with --run or "
                          "`qdepth-bench run`.")
        return
    if fmt is TableFormat.rich and out is None:
        for table in ablation_to_rich(views):
            console.print(table)
        return
    if fmt is TableFormat.html:
        raise UserError("ablation tables render as rich, markdown, csv or latex; use one of those.")
    render = {TableFormat.markdown: ablation_to_markdown, TableFormat.csv: ablation_to_csv,
              TableFormat.latex: ablation_to_latex, TableFormat.rich: ablation_to_markdown}[fmt]
    _write(render(views), out)


@app.command()
def leaderboard(
    fmt: Annotated[TableFormat, typer.Option("--format", "-f", case_sensitive=False)] = TableFormat.rich,
    out: Annotated[Optional[Path], typer.Option(help="write to this file (e.g. leaderboard.html) instead of printing")] = None,
    db: DbOption = None,
) -> None:
    """Every policy on every suite it has results for, ranked, with the paper's published rows marked."""
    from .report.leaderboard import build_leaderboard

    store = open_store(db)
    views = build_leaderboard(store)
    if not any(r.kind == "ours" for v in views for r in v.rows):
        err_console.print(f"no runs in {store.path} yet: showing the published rows only; add yours with "
                          "`qdepth-bench run SUITE --policy NAME`.")
    _print_views(views, fmt, out)


@app.command()
def figure(
    kind: Annotated[str, typer.Argument(help="success: per-task success bars with 95% intervals; depth: the "
                                             "paper's Fig. 3 (RGB / ground truth / depth from predicted tokens)")],
    suite: Annotated[Optional[str], typer.Argument(help="success: the suite to plot")] = None,
    policies: Annotated[Optional[str], typer.Option(help="success: comma-separated policy names (default: all)")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="depth: a QDepth-VLA checkpoint folder")] = None,
    vqvae: Annotated[Optional[Path], typer.Option(help="depth: the VQ-VAE folder (default: the checkpoint recipe's)")] = None,
    data: Annotated[Optional[Path], typer.Option(help="depth: an annotated LIBERO HDF5 file")] = None,
    out: Annotated[Optional[Path], typer.Option(help="PNG file to write")] = None,
    db: DbOption = None,
) -> None:
    """Figures as PNG (matplotlib): success bars from the database, or the depth reconstruction figure."""
    from .report.figures import depth_figure, success_figure

    if kind == "depth":
        if checkpoint is None or data is None:
            raise UserError("figure depth needs --checkpoint FOLDER and --data FILE.hdf5 (annotated with depth).")
        path = depth_figure(checkpoint, vqvae, data, out or Path("results/figures/depth.png"))
        err_console.print(f"wrote {path}")
        return
    if kind != "success":
        raise UserError(f"unknown figure '{kind}': success or depth.")
    if suite is None:
        raise UserError("figure success needs a SUITE, e.g. `qdepth-bench figure success libero_object`.")
    store = open_store(db)
    views = build_tables(store, suite, _split(policies), reference=False)
    path = success_figure(views[0] if views else None, out or Path(f"results/figures/{suite}_success.png"), suite)
    if path is None:
        err_console.print(f"no results for {suite} in {store.path} to plot; record some with "
                          f"`qdepth-bench run {suite} --policy NAME`.")
        return
    err_console.print(f"wrote {path}")


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
        counts = spec.task_episode_counts()
        steps = sorted({int(t["max_steps"]) for t in spec.extra.get("tasks", [])}) or [int(spec.protocol["max_steps"])]
        out.add_row(spec.name, " or ".join(spec.backend_choices), str(spec.n_tasks), _span(counts), str(sum(counts)),
                    _span(steps), ", ".join(spec.aliases))
    console.print(out)
    gridded = [spec for spec in registry.suites.values() if spec.extra.get("tasks")]
    if gridded:
        from .envs.simpler_grid import task_cells

        tasks = Table("suite", "task", "episodes", "max steps", "env ids", title="tasks with episode grids")
        for spec in gridded:
            for task in spec.extra["tasks"]:
                cells = task_cells(task, spec.protocol.get("grid_mode", "grid"), int(spec.protocol.get("grid_repeats", 1)))
                per_cell = sorted({c["env_id"] for c in cells if "env_id" in c})
                ids = {k: ", ".join(per_cell) if v == "per_cell" else v for k, v in task["env_ids"].items()}
                tasks.add_row(spec.name, task["key"], str(len(cells)), str(task["max_steps"]),
                              "; ".join(f"{k}: {v}" for k, v in ids.items()))
        console.print(tasks)
    for group, members in registry.groups.items():
        console.print(f"group [bold]{group}[/bold] = {', '.join(members)}")


def _span(values: list[int]) -> str:
    """`24` when every task has the same number, `108-300` when they differ."""
    return str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}"


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
                "setting", "protocol_hash", "standard_protocol", "replan_steps", "actions_per_call", "seed", "status",
                "git_commit", "host", "command"):
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
def serve(
    policy: Annotated[str, typer.Option("--policy", "-p", help="registered name, module:Class or policy YAML")],
    policy_arg: Annotated[Optional[list[str]], typer.Option("--policy-arg", "-a", help="policy option key=value")] = None,
    checkpoint: CheckpointOption = None,
    host: Annotated[str, typer.Option(help="interface to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    suite: Annotated[str, typer.Option(help="suite whose task conventions openpi clients get (they send no task)")] = "libero_object",
    max_request_mb: Annotated[int, typer.Option(help="largest request accepted, in MiB")] = 64,
) -> None:
    """Serve a policy over openpi's websocket protocol (for `--policy remote` and openpi clients)."""
    import asyncio

    from .remote.server import PolicyServer

    specs = suite_registry().resolve(suite)
    default_task = make_backend(specs[0]).task_info(0)
    agent = make_policy(policy, policy_options(policy_arg, checkpoint))
    server = PolicyServer(agent, default_task, max_request_mb << 20)
    identity = agent.identity()
    console.print(f"serving [bold]{agent.name}[/bold] (config {identity.config_hash}"
                  f"{', weights ' + identity.checkpoint_hash if identity.checkpoint_hash else ''}) on "
                  f"ws://{host}:{port}  · health: http://{host}:{port}/healthz · Ctrl-C stops", highlight=False)
    try:
        asyncio.run(server.serve(host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port.") from None
    except KeyboardInterrupt:
        err_console.print("server stopped.")
    finally:
        agent.close()


@data_app.command("generate")
def data_generate(
    suite: Annotated[str, typer.Argument(help="a LIBERO suite, e.g. libero_object")],
    policy: Annotated[str, typer.Option("--policy", "-p", help="the demonstrator (e.g. scripted)")] = "scripted",
    episodes_per_task: Annotated[int, typer.Option(help="successful demonstrations to keep per task")] = 20,
    tasks: Annotated[Optional[str], typer.Option(help="task ids, e.g. 0-4 (default: all)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: data/<suite>_<policy>)")] = None,
    workers: Annotated[int, typer.Option(help="env worker processes")] = DEFAULT_WORKERS,
    policy_arg: Annotated[Optional[list[str]], typer.Option("--policy-arg", "-a", help="policy option key=value")] = None,
) -> None:
    """Roll out a demonstrator from fresh initial states (never the evaluation's), keep the successes, and
    write one LIBERO-format HDF5 per task with frames, proprio, actions and simulator states."""
    from .data.generate import generate

    specs = suite_registry().resolve(suite)
    if len(specs) != 1 or specs[0].family != "libero":
        raise UserError(f"data generate takes one LIBERO suite (e.g. libero_object), not '{suite}'.")
    spec = specs[0]
    out = out or Path("data") / f"{spec.name}_{policy}"
    agent = make_policy(policy, parse_key_values(policy_arg or []))
    backend = make_backend(spec)
    command = shlex.join(["qdepth-bench", *sys.argv[1:]])
    progress: dict[str, int] = {"success": 0, "failure": 0, "error": 0}

    def on_plan(plan) -> None:  # type: ignore[no-untyped-def]
        console.print(f"{spec.name} · {agent.name} · {len(plan.pending)} attempts to run "
                      f"({len(plan.episodes) - len(plan.pending)} already done) -> {out}", highlight=False)

    def on_episode(result: EpisodeResult) -> None:
        if not result.will_retry:
            progress[result.status] += 1
        console.print(f"  {result.episode.key} {result.status} ({result.steps} steps)"
                      + (f": {result.error}" if result.error else ""), highlight=False)

    try:
        counts = generate(spec, backend, agent, tasks, episodes_per_task, out, workers, command,
                          on_plan=on_plan, on_episode=on_episode)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished attempts are kept in {out}; run the same command to continue.")
        raise typer.Exit(130) from None
    finally:
        agent.close()
    for task_id, n in counts.items():
        console.print(f"task {task_id}: {n}/{episodes_per_task} demonstrations", highlight=False)
    short = [t for t, n in counts.items() if n < episodes_per_task]
    if short:
        err_console.print(f"tasks {short} have fewer demonstrations than asked: the demonstrator rarely succeeds "
                          "there; their files hold what succeeded.")


class DepthSource(str, Enum):
    sim = "sim"
    model = "model"


@depth_app.command("annotate")
def depth_annotate(
    datasets: Annotated[list[Path], typer.Argument(help="LIBERO HDF5 files (or LeRobot folders with --source model)")],
    source: Annotated[DepthSource, typer.Option(help="sim: restore recorded states and render depth; "
                                                     "model: a monocular estimator")] = DepthSource.sim,
    model: Annotated[Optional[Path], typer.Option(help="with --source model: a local depth-estimation model folder")] = None,
    suite: Annotated[Optional[str], typer.Option(help="with --source sim: the LIBERO suite of the demos "
                                                      "(default: found from the file's BDDL name)")] = None,
) -> None:
    """Depth for every frame, cached beside each dataset (re-running skips what is done)."""
    from .data import depth as depth_cache

    for dataset in datasets:
        if not dataset.exists():
            raise UserError(f"{dataset} does not exist.")
        if source is DepthSource.sim:
            frames = depth_cache.sim_frames(dataset, suite)
        else:
            if model is None:
                raise UserError("--source model needs --model FOLDER (a Depth Anything model saved locally).")
            frames = depth_cache.model_frames(_episode_reader(dataset), model)
        counts = depth_cache.annotate(dataset, frames, source.value,
                                      lambda demo, n: console.print(f"  {demo}: {n} frames", highlight=False))
        console.print(f"{dataset}: annotated {counts['annotated']} demos ({counts['frames']} frames), skipped "
                      f"{counts['skipped']} already done -> {depth_cache.cache_path(dataset)}", highlight=False)


def _episode_reader(dataset: Path):  # type: ignore[no-untyped-def]
    if dataset.is_dir():
        from .data.lerobot import read_episodes as read_lerobot

        return lambda: read_lerobot(dataset)
    from .data.libero_hdf5 import read_episodes as read_hdf5

    return lambda: read_hdf5(dataset, cameras=("main",))


@depth_app.command("encode")
def depth_encode(
    datasets: Annotated[list[Path], typer.Argument(help="annotated datasets")],
    vqvae: Annotated[Path, typer.Option(help="folder of a trained depth VQ-VAE")],
) -> None:
    """Turn annotated depth into VQ-VAE code indices (the depth expert's targets)."""
    from .train.vqvae import encode_dataset

    for dataset in datasets:
        n = encode_dataset(dataset, vqvae)
        console.print(f"{dataset}: encoded {n} frames (frames already encoded by this VQ-VAE skipped)", highlight=False)


def _recipe(recipe: Path, overrides: list[str] | None, kind: str):  # type: ignore[no-untyped-def]
    from .train.recipe import load_recipe

    loaded = load_recipe(recipe, parse_key_values(overrides or []))
    if loaded.kind != kind:
        raise UserError(f"{recipe} is a {loaded.kind} recipe; use `qdepth-bench train {loaded.kind}`.")
    return loaded


def _print_log(row: dict) -> None:
    console.print("  " + "  ".join(f"{k} {v}" for k, v in row.items()), highlight=False)


@train_app.command("vqvae")
def train_vqvae_command(
    recipe: Annotated[Path, typer.Option(help="training/<name>.yaml with kind: vqvae")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe value: train.steps=100")] = None,
) -> None:
    """Train the depth VQ-VAE (K=256 codes of dimension 160 on a 16x16 grid) on annotated depth."""
    from .train.vqvae import train_vqvae

    loaded = _recipe(recipe, set_, "vqvae")
    out = train_vqvae(loaded, _print_log)
    console.print(f"VQ-VAE written to {out}: {(out / 'evaluation.json').read_text()}", highlight=False)


@train_app.command("policy")
def train_policy_command(
    recipe: Annotated[Path, typer.Option(help="training/<name>.yaml with kind: policy")],
    resume: Annotated[bool, typer.Option(help="continue from the recipe's last checkpoint")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe value: train.steps=100")] = None,
) -> None:
    """Co-train QDepth-VLA (or a variant, or pi0) from a recipe; torchrun for several processes."""
    from .train.policy import train_policy

    loaded = _recipe(recipe, set_, "policy")
    out = train_policy(loaded, resume, _print_log)
    console.print(f"checkpoint written to {out}; evaluate it with `qdepth-bench run SUITE --policy "
                  f"{loaded.model.get('variant', 'qdepth')} --checkpoint {out}`", highlight=False)


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

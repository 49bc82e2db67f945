"""`qdepth-bench run`: evaluate a policy on a suite, with a header line and a progress bar per suite."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from qdepth_bench.cli.common import (
    DEFAULT_WORKERS,
    EXIT_EPISODE_ERRORS,
    CheckpointOption,
    DbOption,
    app,
    build_policy,
    err_console,
    open_run_store,
    policy_options,
    print_views,
)
from qdepth_bench.cli.progress import evaluate_with_progress
from qdepth_bench.core.errors import INTERRUPTED_EXIT, UserError
from qdepth_bench.eval.engine import Engine, EngineOptions
from qdepth_bench.eval.plan import MAX_ATTEMPTS, RunPlan, Selection
from qdepth_bench.eval.videos import check_video_dir
from qdepth_bench.registry.perturbations import perturbed
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.report.tables import build_tables
from qdepth_bench.results.store import Store, default_db_path, remove_database


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class GridMode(str, Enum):
    grid = "grid"
    prepackaged = "prepackaged"


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="suite or group: libero, libero_object, ... (see `suites`)")],
    policy_name: Annotated[str, typer.Option("--policy", "-p", help="registered name, module:Class or policy YAML")],
    policy_arg: Annotated[list[str] | None, typer.Option("--policy-arg", "-a", help="policy option key=value")] = None,
    checkpoint: CheckpointOption = None,
    tasks: Annotated[str | None, typer.Option(help="task ids, e.g. 0,1 or 0-4 (default: all)")] = None,
    episodes: Annotated[int | None, typer.Option(help="episodes per task (default: the protocol's trials)")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="simulator, for suites with several (simpler_widowx: maniskill3 or simpler_env); recorded in the run"
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="env seed (default: the protocol's; others are non-standard)")
    ] = None,
    grid_mode: Annotated[
        GridMode | None,
        typer.Option(
            case_sensitive=False,
            help="SIMPLER: the published grid "
            "of episodes, or SimplerEnv's prepackaged draws from the env's RNG (non-standard)",
        ),
    ] = None,
    grid_repeats: Annotated[
        int | None,
        typer.Option(
            help="SIMPLER, with --grid-mode prepackaged: draws per grid "
            "cell (SimplerEnv's maintainers advise 3 for the Bridge tasks)"
        ),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option(
            help="run each episode (initial state, grid cell) this many times, each with its own seed; one run, "
            "pooled in tables with an interval over initial states"
        ),
    ] = 1,
    max_steps: Annotated[int | None, typer.Option(help="override the protocol's max policy steps")] = None,
    perturb: Annotated[
        str | None,
        typer.Option(
            help="perturbation DIMENSION:LEVEL, e.g. camera_pose:3 (content/suites/perturbations/; recorded, "
            "non-standard; episodes pair with the unperturbed run's: docs/robustness.md)"
        ),
    ] = None,
    perturb_seed: Annotated[int, typer.Option(help="seed of the perturbation's random draws (recorded)")] = 0,
    stand_ins: Annotated[
        bool,
        typer.Option(
            "--stand-ins",
            help="SIMPLER: build a stand-in table where a scene's stage mesh is missing (flagged per episode, "
            "non-standard, left out of tables unless asked)",
        ),
    ] = False,
    replan_steps: Annotated[
        int | None, typer.Option(help="actions executed open-loop per policy call (default: the protocol's)")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="env worker processes (default: one per CPU core, at most 8)")
    ] = DEFAULT_WORKERS,
    executor: Annotated[Executor, typer.Option(case_sensitive=False, help="where env workers run")] = Executor.local,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster address for --executor ray (default: "
            "start a local instance; 'auto': this machine's cluster)"
        ),
    ] = None,
    episode_timeout: Annotated[
        float,
        typer.Option(
            help="seconds a worker may spend on one episode before it is restarted and the episode recorded as an error"
        ),
    ] = 900.0,
    video: Annotated[Path | None, typer.Option(help="write an mp4 per episode under this folder")] = None,
    join: Annotated[
        bool,
        typer.Option(
            "--join",
            help="work on a run another process is running (this or another machine on a shared database), "
            "taking only the episodes nobody has claimed",
        ),
    ] = False,
    retry_errors: Annotated[
        bool,
        typer.Option(
            "--retry-errors",
            help="also run again the episodes that ended in errors after every attempt (once their cause is "
            "fixed); recorded successes and failures are kept",
        ),
    ] = False,
    depth_metrics: Annotated[
        bool,
        typer.Option(
            "--depth-metrics",
            help="score the policy's depth predictions against the simulator's depth at every observed frame "
            "(token accuracy, top-5, cross-entropy, abs-rel per episode; see docs/depth.md); a separate run, "
            "same protocol",
        ),
    ] = False,
    depth_steps: Annotated[
        bool, typer.Option("--depth-steps", help="with --depth-metrics: keep every observed frame's scores too")
    ] = False,
    vqvae: Annotated[
        Path | None,
        typer.Option(help="with --depth-metrics: the policy's depth VQ-VAE folder (default: the checkpoint's)"),
    ] = None,
    db: DbOption = None,
) -> None:
    """Evaluate a policy on a suite; re-running the same command resumes it."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers}).")
    if (depth_steps or vqvae is not None) and not depth_metrics:
        raise UserError("--depth-steps and --vqvae go with --depth-metrics; add it or drop them.")
    for flag, value in (("--max-steps", max_steps), ("--replan-steps", replan_steps), ("--grid-repeats", grid_repeats)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value}).")
    selection = Selection.parse(tasks, episodes, repeats, retry_errors)
    overrides = {
        k: v
        for k, v in (
            ("env_seed", seed),
            ("max_steps", max_steps),
            ("replan_steps", replan_steps),
            ("grid_mode", grid_mode and grid_mode.value),
            ("grid_repeats", grid_repeats),
            ("stand_ins", stand_ins or None),
        )
        if v is not None
    }
    specs = [
        (spec.with_backend(backend) if backend else spec).with_overrides(overrides)
        for spec in suite_registry().resolve(suite)
    ]
    if perturb is not None:
        specs = [perturbed(spec, perturb, perturb_seed) for spec in specs]
    # refused before anything is created or loaded
    task_ids = [selection.task_ids(spec) for spec in specs][0]
    check_video_dir(video)
    options = EngineOptions(
        workers=workers,
        executor=executor.value,
        ray_address=ray_address,
        episode_timeout_s=episode_timeout,
        video_dir=video,
        join=join,
        depth_metrics=depth_metrics,
        depth_steps=depth_steps,
    )
    with Engine() as engine:
        if executor is Executor.local:  # env workers start, and build an env, while the policy loads
            wanted = workers if episodes is None else min(workers, len(task_ids) * episodes * repeats)
            engine.start_early(specs[0], wanted, task_ids)
        policy = build_policy(policy_name, policy_options(policy_arg, checkpoint))
        try:
            if depth_metrics and policy.depth_output() == "tokens":
                options.depth_codec = policy.depth_codec(vqvae)
            with run_store(db) as store:
                if repeats > 1 and not policy.uses_seed:
                    err_console.print(
                        f"--repeats {repeats}: policy '{policy.name}' does not use the episode seed, so its repeats "
                        "will be identical wherever the simulator does not draw from it either (LIBERO).",
                        markup=False,
                        highlight=False,
                    )
                plans = evaluate_with_progress(store, specs, policy, selection, options, engine)
        finally:
            policy.close()
    print_views(build_tables(store, suite, stand_ins=True), "rich")  # what was just run, flagged
    summary = error_summary(store, plans)
    if summary:
        err_console.print(summary, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_EPISODE_ERRORS)


@contextmanager
def run_store(db: Path | None) -> Iterator[Store]:
    """The database a run writes to (`open_run_store`). A run stopped by Ctrl-C or SIGTERM (exit 130) before its
    first episode leaves nothing half-made: the runs it created without an episode are deleted, and so is the
    database if this command created it and it holds no run."""
    path = db or default_db_path()
    fresh = not path.exists()
    store: Store | None = None
    existing: set[str] = set()
    try:
        store = open_run_store(db)
        existing = {r["run_id"] for r in store.runs()}
        yield store
    except (KeyboardInterrupt, typer.Exit) as stop:
        if isinstance(stop, KeyboardInterrupt) or stop.exit_code == INTERRUPTED_EXIT:
            if store is not None:
                store.discard_empty_runs(existing)
            if fresh and (store is None or not store.runs()):
                remove_database(path)
        raise


def error_summary(store: Store, plans: list[RunPlan]) -> str:
    """One line on the episodes of these plans that ended in errors ('' for none): how many of each kind,
    and what to do about them."""
    errors = [e for plan in plans for e in store.errors(plan.run_id) if e["place"] in {p.place for p in plan.episodes}]
    if not errors:
        return ""
    transient = [e for e in errors if e["error_kind"] == "transient"]
    permanent = [e for e in errors if e["error_kind"] != "transient"]
    total = sum(len(plan.episodes) for plan in plans)
    parts = []
    if transient:
        parts.append(
            f"{len(transient)} may pass by themselves (e.g. {transient[0]['error']}): run the same command again "
            "to retry them"
        )
    if permanent:
        parts.append(
            f"{len(permanent)} failed {MAX_ATTEMPTS} times (e.g. {permanent[0]['error']}): fix the cause, then run "
            "the same command with --retry-errors to run them again (recorded episodes are kept)"
        )
    return f"{len(errors)} of {total} episodes ended in errors, never counted as failures; " + "; ".join(parts) + "."

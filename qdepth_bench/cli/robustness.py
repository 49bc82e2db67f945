"""`qdepth-bench robustness PRESET`: how success holds up under perturbations, against unperturbed twins.

With `--run` each policy is first evaluated on the unperturbed suite (a recorded run resumes, so twins
already in the database are reused) and on every level of the preset's dimensions; the strongest level may
get more episodes than the others (`--strongest-episodes`). Then the report is rendered: per dimension and
level, the success rate with its interval and the paired drop against the twins (docs/robustness.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qdepth_bench.cli.common import (
    DEFAULT_WORKERS,
    DbOption,
    FormatOption,
    app,
    build_policy,
    console,
    err_console,
    open_store,
    print_views,
    progress_on_stderr,
)
from qdepth_bench.cli.progress import evaluate_with_progress
from qdepth_bench.core.errors import UserError
from qdepth_bench.core.protocol import SuiteSpec
from qdepth_bench.eval.engine import EngineOptions
from qdepth_bench.eval.plan import Selection
from qdepth_bench.registry.perturbations import perturbation_family
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.results.store import Store


def preset_specs(base: SuiteSpec, preset: str, only: list[str] | None, seed: int) -> list[list[SuiteSpec]]:
    """For each dimension of the preset (or those of `only`), its perturbed suites, weakest level first."""
    family = perturbation_family(base.family)
    dimensions = list(family.preset(preset))
    if only:
        missing = [d for d in only if d not in dimensions]
        if missing:
            raise UserError(f"--only {missing[0]}: preset '{preset}' has {', '.join(dimensions)}.")
        dimensions = [d for d in dimensions if d in only]
    return [
        [
            base.with_perturbation(family.perturbation(name, level, seed))
            for level in range(1, len(family.dimension(name).levels) + 1)
        ]
        for name in dimensions
    ]


@app.command()
def robustness(
    preset: Annotated[str, typer.Argument(help="preset (e.g. depth-targeted) or one perturbation dimension")],
    suite: Annotated[str, typer.Option(help="the unperturbed suite, e.g. libero_object")] = "libero_object",
    policies: Annotated[
        list[str] | None, typer.Option("--policy", "-p", help="policies to report (and with --run, evaluate)")
    ] = None,
    only: Annotated[list[str] | None, typer.Option(help="only these dimensions of the preset")] = None,
    run_missing: Annotated[
        bool, typer.Option("--run", help="first evaluate each policy on the twins and every level (resumable)")
    ] = False,
    tasks: Annotated[str | None, typer.Option(help="with --run: task ids, e.g. 0,3 (default: all)")] = None,
    episodes: Annotated[
        int | None, typer.Option(min=1, help="with --run: episodes per task at each level (default: the protocol's)")
    ] = None,
    strongest_episodes: Annotated[
        int | None,
        typer.Option(min=1, help="with --run: episodes per task at each dimension's strongest level and the twins"),
    ] = None,
    perturb_seed: Annotated[int, typer.Option(help="seed of the perturbations' random draws (recorded)")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="with --run: env worker processes")] = DEFAULT_WORKERS,
    figure: Annotated[
        Path | None, typer.Option(help="write the success-vs-strength figure (PNG) here, one line per policy")
    ] = None,
    fmt: FormatOption = "rich",
    out: Annotated[Path | None, typer.Option(help="write the report to this file instead of printing")] = None,
    db: DbOption = None,
) -> None:
    """Success per perturbation dimension and level with its interval, and the drop against the unperturbed
    twin episodes (same task, initial state and seed) with an exact McNemar test."""
    from qdepth_bench.report.robustness import build_robustness, robustness_figure

    specs = suite_registry().resolve(suite)
    if len(specs) != 1:
        raise UserError(f"--suite {suite} is a group; name one suite, e.g. {specs[0].name}.")
    base = specs[0]
    dimensions = preset_specs(base, preset, only, perturb_seed)
    store = open_store(db)
    with progress_on_stderr(fmt.lower() != "rich" and out is None):
        if run_missing:
            if not policies:
                raise UserError("--run needs at least one --policy to evaluate.")
            _run(store, base, dimensions, policies, tasks, episodes, strongest_episodes, workers)
    views = build_robustness(store, base, [spec for levels in dimensions for spec in levels], policies)
    if not views:
        err_console.print(
            f"no perturbed runs of {base.name} for '{preset}' in {store.path}; record them with --run.",
            highlight=False,
        )
        return
    print_views(views, fmt, out)
    if figure is not None:
        console.print(f"figure: {robustness_figure(views, figure)}", highlight=False)


def _run(
    store: Store,
    base: SuiteSpec,
    dimensions: list[list[SuiteSpec]],
    policies: list[str],
    tasks: str | None,
    episodes: int | None,
    strongest_episodes: int | None,
    workers: int,
) -> None:
    """Twins and strongest levels first (every policy), then the weaker levels: a plan stopped early leaves
    the comparison that matters most complete."""
    strongest = [levels[-1] for levels in dimensions]
    weaker = [spec for levels in dimensions for spec in levels[:-1]]
    phases = [([base, *strongest], strongest_episodes or episodes), (weaker, episodes)]
    options = EngineOptions(workers=workers)
    for specs, count in phases:
        if not specs:
            continue
        selection = Selection.parse(tasks, count)
        for name in policies:
            policy = build_policy(name, {})
            try:
                evaluate_with_progress(store, specs, policy, selection, options)
            finally:
                policy.close()

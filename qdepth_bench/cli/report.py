"""Report commands: `table`, `ablation`, `leaderboard` and `figure`, all read from the results database."""

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
    err_console,
    open_store,
    print_views,
    split_list,
)
from qdepth_bench.cli.run import evaluate
from qdepth_bench.core.errors import UserError
from qdepth_bench.eval.engine import EngineOptions
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.report.tables import build_tables


@app.command()
def table(
    suite: Annotated[str | None, typer.Argument(help="suite or group (default: every table with rows)")] = None,
    policies: Annotated[str | None, typer.Option(help="comma-separated policy names to show")] = None,
    run_ids: Annotated[str | None, typer.Option("--runs", help="comma-separated run ids (default: latest)")] = None,
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="show the paper's rows")] = True,
    stand_ins: Annotated[bool, typer.Option("--stand-ins", help="include episodes run with stand-in assets")] = False,
    fmt: FormatOption = "rich",
    db: DbOption = None,
) -> None:
    """Success rates per suite/task with n and 95% Wilson intervals, beside the paper's published numbers."""
    store = open_store(db)
    views = build_tables(store, suite, split_list(policies), split_list(run_ids), reference, stand_ins)
    if not any(r.kind == "ours" for v in views for r in v.rows):
        err_console.print(
            f"no results in {store.path}"
            + (f" for {suite}" if suite else "")
            + ("; showing the published rows only" if views else "")
            + "; record some with `qdepth-bench run SUITE --policy NAME`."
        )
    if views:
        print_views(views, fmt)


@app.command()
def ablation(
    name: Annotated[str, typer.Argument(help="ablation id (content/ablations/<id>.yaml), e.g. table6")],
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="show the published ablation")] = True,
    run_missing: Annotated[bool, typer.Option("--run", help="first run the variants that have no results")] = False,
    tasks: Annotated[str | None, typer.Option(help="with --run: task ids (default: all)")] = None,
    episodes: Annotated[
        int | None, typer.Option(help="with --run: episodes per task (default: the protocol's)")
    ] = None,
    workers: Annotated[int, typer.Option(help="with --run: env worker processes")] = DEFAULT_WORKERS,
    fmt: FormatOption = "rich",
    out: Annotated[Path | None, typer.Option(help="write to this file instead of printing")] = None,
    db: DbOption = None,
) -> None:
    """An ablation table (components, per-task success, change vs the full model, paired tests)."""
    from qdepth_bench.registry.ablations import ablation_spec
    from qdepth_bench.report.ablation import build_ablation, missing_variants

    spec = ablation_spec(name)
    store = open_store(db)
    if run_missing:
        for variant in missing_variants(store, spec):
            agent = build_policy(variant.policy, {})
            try:
                evaluate(
                    store, suite_registry().resolve(spec.suite), agent, tasks, episodes, EngineOptions(workers=workers)
                )
            finally:
                agent.close()
    views = build_ablation(store, spec, reference)
    if not views:
        err_console.print(
            f"no results in {store.path} for the variants of {spec.id} on {spec.suite} "
            f"({', '.join(v.policy for v in spec.variants)}); record them with --run or "
            "`qdepth-bench run`."
        )
        return
    print_views(views, fmt, out)


@app.command()
def leaderboard(
    fmt: FormatOption = "rich",
    out: Annotated[
        Path | None, typer.Option(help="write to this file (e.g. leaderboard.html) instead of printing")
    ] = None,
    db: DbOption = None,
) -> None:
    """Every policy on every suite it has results for, ranked, with the paper's published rows marked."""
    from qdepth_bench.report.leaderboard import build_leaderboard

    store = open_store(db)
    views = build_leaderboard(store)
    if not any(r.kind == "ours" for v in views for r in v.rows):
        err_console.print(
            f"no runs in {store.path} yet: showing the published rows only; add yours with "
            "`qdepth-bench run SUITE --policy NAME`."
        )
    print_views(views, fmt, out, **({"title": "qdepth-bench leaderboard"} if fmt.lower() == "html" else {}))


@app.command()
def figure(
    kind: Annotated[
        str,
        typer.Argument(
            help="success: per-task success bars with 95% intervals; depth: the "
            "paper's Fig. 3 (RGB / ground truth / depth from predicted tokens)"
        ),
    ],
    suite: Annotated[str | None, typer.Argument(help="success: the suite to plot")] = None,
    policies: Annotated[str | None, typer.Option(help="success: comma-separated policy names (default: all)")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="depth: a QDepth-VLA checkpoint folder")] = None,
    vqvae: Annotated[
        Path | None, typer.Option(help="depth: the VQ-VAE folder (default: the checkpoint recipe's)")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="depth: an annotated LIBERO HDF5 file")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG file to write")] = None,
    db: DbOption = None,
) -> None:
    """Figures as PNG (matplotlib): success bars from the database, or the depth reconstruction figure."""
    from qdepth_bench.report.figures import success_figure

    if kind == "depth":
        from qdepth_bench.train.figures import depth_figure

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
    views = build_tables(store, suite, split_list(policies), reference=False)
    written = success_figure(views[0] if views else None, out or Path(f"results/figures/{suite}_success.png"), suite)
    if written is None:
        err_console.print(
            f"no results for {suite} in {store.path} to plot; record some with "
            f"`qdepth-bench run {suite} --policy NAME`."
        )
        return
    err_console.print(f"wrote {written}")

"""Report commands: `table`, `leaderboard` and `figure`, all read from the results database (`ablation` has
its own module: it can also train and run what it reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qdepth_bench.cli.common import (
    DbOption,
    FormatOption,
    app,
    err_console,
    open_store,
    print_views,
    split_list,
)
from qdepth_bench.core.errors import UserError
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


@app.command("depth-report")
def depth_report(
    run_ids: Annotated[list[str], typer.Argument(help="runs recorded with `run --depth-metrics` (id or prefix)")],
    figures: Annotated[
        Path | None, typer.Option(help="also write one PNG per run here: depth accuracy by outcome, per task")
    ] = None,
    fmt: FormatOption = "rich",
    db: DbOption = None,
) -> None:
    """How well each run's policy predicted depth, per task, against chance and a no-depth-expert control, and
    whether its successes went with better depth predictions."""
    from qdepth_bench.report.depth import depth_figure, depth_views

    store = open_store(db)
    views = depth_views(store, run_ids)
    print_views(views, fmt)
    if figures is not None:
        for view in views:
            err_console.print(f"wrote {depth_figure(view, figures / f'depth-{view.run_id}.png')}")

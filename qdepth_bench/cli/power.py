"""`qdepth-bench power`: how many episodes an evaluation needs to detect a given change in success rate."""

from __future__ import annotations

import math
from typing import Annotated

import typer
from rich.table import Table

from qdepth_bench.cli.common import app, console
from qdepth_bench.core.errors import UserError
from qdepth_bench.report.stats import independent_discordance, sample_size_independent, sample_size_paired


def _probability(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not low < value < high:
        raise UserError(f"{name} must lie strictly between {low:g} and {high:g} (got {value:g}).")


@app.command()
def power(
    baseline: Annotated[float, typer.Option(help="success rate of the reference policy, e.g. 0.6")],
    delta: Annotated[float, typer.Option(help="change in success rate to detect, e.g. 0.05 or -0.1")],
    paired: Annotated[
        bool, typer.Option("--paired", help="only the paired design (both policies on the same episodes)")
    ] = False,
    discordance: Annotated[
        float | None,
        typer.Option(
            help="expected share of episodes where exactly one policy succeeds (default: independent outcomes)"
        ),
    ] = None,
    alpha: Annotated[float, typer.Option(help="two-sided significance level")] = 0.05,
    target_power: Annotated[float, typer.Option("--power", help="probability of detecting the change")] = 0.8,
) -> None:
    """Episodes per policy needed to detect `delta` at `alpha` with the given power, for independent episodes
    (two-proportion test) and for paired episodes (exact McNemar, as `table` and `ablation` use)."""
    _probability("--baseline", baseline)
    _probability("--baseline + --delta", baseline + delta)
    _probability("--alpha", alpha)
    _probability("--power", target_power)
    if delta == 0:
        raise UserError("--delta must not be 0: no number of episodes detects no change.")
    other = baseline + delta
    psi = independent_discordance(baseline, other) if discordance is None else discordance
    out = Table("design", "assumes", "episodes per policy", "episodes in all", title=f"{baseline:g} -> {other:g}")
    if not paired:
        n = math.ceil(sample_size_independent(baseline, other, alpha, target_power))
        out.add_row("independent episodes", "two-proportion z test (Fleiss)", str(n), str(2 * n))
    try:
        pairs = math.ceil(sample_size_paired(baseline, other, discordance, alpha, target_power))
    except ValueError as exc:
        raise UserError(f"--discordance: {exc}.") from None
    assumption = f"discordance {psi:.3g}" + (" (independent outcomes)" if discordance is None else "")
    out.add_row("paired (same episodes)", assumption, str(pairs), str(2 * pairs))
    console.print(out)
    console.print(
        f"alpha {alpha:g} two-sided, power {target_power:g}; paired: Connor's approximation for McNemar's test, "
        "where policies that fail the same episodes (smaller discordance) need fewer pairs. docs/statistics.md "
        "gives the formulas.",
        highlight=False,
    )

"""`qdepth-bench realsim [RUN[=POLICY] ...]`: how well simulated runs order policies as the real robot does
(MMRV and Pearson's r against SimplerEnv's published real-robot rates); without runs, SimplerEnv's own figures."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from qdepth_bench.cli.common import DbOption, app, console, err_console, open_store
from qdepth_bench.core.errors import UserError
from qdepth_bench.report.episodes import load_episodes
from qdepth_bench.report.realsim import TaskAgreement, published_agreement, reference_policies, run_agreement
from qdepth_bench.results.store import Store


def _policy_of_runs(store: Store, specs: list[str]) -> dict[str, str]:
    """run id -> published policy, from RUN=POLICY or the run's own policy name when it is a published one."""
    known = reference_policies()
    found = {}
    for spec in specs:
        run_text, _, named = spec.partition("=")
        run = store.run(run_text.strip())
        policy = named.strip() or str(run["policy_name"]).lower()
        if policy not in known:
            raise UserError(
                f"run {run['run_id']} evaluates '{run['policy_name']}', which has no published real-robot rates; "
                f"say which published policy it is, e.g. {run['run_id']}={known[0]} (one of {', '.join(known)})."
            )
        found[run["run_id"]] = policy
    return found


def _rates_table(rows: list[TaskAgreement]) -> Table:
    out = Table("task", "policy", "episodes", "sim (these runs)", "sim (SIMPLER)", "real", title="success rates")
    for row in rows:
        for policy, rate, n in zip(row.policies, row.rates, row.episodes, strict=True):
            out.add_row(
                row.task.key,
                policy,
                str(n),
                f"{rate:.3f}",
                f"{row.task.sim[policy]:.3f}",
                f"{row.task.real[policy]:.3f}",
            )
    return out


@app.command()
def realsim(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            help="simulated runs (id or unique prefix), each RUN=POLICY to name the published policy it evaluates "
            "(default: the run's own policy name)"
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Real-vs-sim agreement per SIMPLER task: MMRV (0 = same order as the real robot) and Pearson's r, beside
    SimplerEnv's own simulator on the same policies. Without runs: SimplerEnv's published figures."""
    if not runs:
        out = Table("task", "policies", "MMRV", "Pearson", title="SimplerEnv's simulation against the real robot")
        for row in published_agreement():
            out.add_row(row.task.key, str(len(row.policies)), f"{row.mmrv:.4f}", f"{row.pearson:.4f}")
        console.print(out)
        return
    store = open_store(db)
    policy_of_run = _policy_of_runs(store, runs)
    # the episodes tables read: those that ran on stand-in assets (not SIMPLER's scenes) are left out
    rows = run_agreement(load_episodes(store, None, list(policy_of_run)), policy_of_run)
    if not rows:
        raise UserError(
            "no SIMPLER task has scored episodes of two or more published policies in these runs; add runs of "
            f"other policies ({', '.join(reference_policies())}) on the same suite."
        )
    out = Table(
        "task",
        "policies",
        "MMRV",
        "Pearson",
        "SIMPLER's MMRV",
        "SIMPLER's Pearson",
        title="agreement with the real robot",
    )
    for row in rows:
        out.add_row(
            row.task.key,
            ", ".join(row.policies),
            f"{row.mmrv:.4f}",
            f"{row.pearson:.4f}",
            f"{row.published_mmrv:.4f}",
            f"{row.published_pearson:.4f}",
        )
    console.print(out)
    console.print(_rates_table(rows))
    err_console.print(
        "MMRV and Pearson as SimplerEnv defines them (docs/statistics.md); real and SIMPLER rates: SimplerEnv's "
        "published numbers (content/reference/simplerenv_real_sim.yaml).",
        highlight=False,
    )

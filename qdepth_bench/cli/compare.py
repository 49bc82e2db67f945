"""`qdepth-bench compare A B --suite S [--sequential]`: two policies on the same episodes, in paired rounds.

The rounds, the test and the record are `eval.sequential_compare`'s (shared with `ablation --sequential`);
this command builds the two policies, shows the rounds through `cli.progress`, and prints the answer: with
`--sequential` the anytime-valid test's decision, without it the exact McNemar test over every pair up to
`--max-pairs`. The same command resumes an interrupted comparison; another design on the same two runs is
refused, since choosing the design after seeing outcomes would void its error guarantee.
"""

from __future__ import annotations

from typing import Annotated

import typer

from qdepth_bench.cli.common import (
    DEFAULT_WORKERS,
    DbOption,
    app,
    build_policy,
    err_console,
    open_run_store,
    policy_options,
)
from qdepth_bench.cli.progress import ComparisonProgress, command_line
from qdepth_bench.core.errors import INTERRUPTED_EXIT, UserError
from qdepth_bench.eval.engine import EngineOptions
from qdepth_bench.eval.plan import Selection
from qdepth_bench.eval.sequential import ALTERNATIVES, SequentialDesign
from qdepth_bench.eval.sequential_compare import Side, refuse_undecidable, run_comparison
from qdepth_bench.registry.suites import suite_registry


@app.command()
def compare(
    policy_a: Annotated[str, typer.Argument(help="policy A: registered name, module:Class or policy YAML")],
    policy_b: Annotated[str, typer.Argument(help="policy B")],
    suite: Annotated[str, typer.Option(help="one suite, e.g. libero_object (see `suites`)")],
    a_arg: Annotated[list[str] | None, typer.Option("--a-arg", help="policy A option key=value")] = None,
    b_arg: Annotated[list[str] | None, typer.Option("--b-arg", help="policy B option key=value")] = None,
    tasks: Annotated[str | None, typer.Option(help="task ids, e.g. 0,1 or 0-4 (default: all)")] = None,
    sequential: Annotated[
        bool, typer.Option("--sequential", help="stop as soon as the anytime-valid test decides")
    ] = False,
    alpha: Annotated[float, typer.Option(help="chance of naming a policy better when neither is")] = 0.05,
    max_pairs: Annotated[int, typer.Option(help="paired episodes at most (each policy runs this many)")] = 200,
    alternative: Annotated[
        str, typer.Option(help=f"what may be concluded: {', '.join(ALTERNATIVES)} (sequential only)")
    ] = "two-sided",
    round_size: Annotated[
        int, typer.Option(help="pairs per round: the test is read after each (default: --workers)")
    ] = 0,
    max_steps: Annotated[int | None, typer.Option(help="override the protocol's max policy steps")] = None,
    workers: Annotated[int, typer.Option(help="env worker processes")] = DEFAULT_WORKERS,
    db: DbOption = None,
) -> None:
    """Compare two policies on the same episodes, in paired rounds; with --sequential stop at the first
    decision (A better, B better, or no difference within --max-pairs). The same command resumes."""
    design = SequentialDesign(alpha=alpha, max_pairs=max_pairs, alternative=alternative)
    if sequential:
        refuse_undecidable(design)
    if workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers}).")
    if round_size < 0:
        raise UserError(f"--round-size must be at least 1 (got {round_size}).")
    if max_steps is not None and max_steps < 1:
        raise UserError(f"--max-steps must be at least 1 (got {max_steps}).")
    specs = suite_registry().resolve(suite)
    if len(specs) != 1:
        raise UserError(f"--suite {suite} is a group of {len(specs)} suites; compare on one of them at a time.")
    spec = specs[0].with_overrides({} if max_steps is None else {"max_steps": max_steps})
    selection = Selection.parse(tasks)
    store = open_run_store(db)
    sides = []
    try:
        for name, options in ((policy_a, a_arg), (policy_b, b_arg)):
            agent = build_policy(name, policy_options(options, None))
            sides.append(Side(agent, spec.for_policy(agent.requirements)))
        run_comparison(
            store,
            (sides[0], sides[1]),
            selection,
            design,
            EngineOptions(workers=workers),
            command_line(),
            ComparisonProgress(),
            sequential=sequential,
            round_size=round_size or workers,
        )
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: finished episodes are saved in {store.path}; run the same command again to continue the "
            "comparison."
        )
        raise typer.Exit(INTERRUPTED_EXIT) from None
    finally:
        for side in sides:
            side.policy.close()

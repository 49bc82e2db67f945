"""`qdepth-bench compare A B --suite S [--sequential]`: two policies on the same episodes, in paired rounds.

Each round runs both policies on the next episodes of an order fixed before the first one (tasks
interleaved, then repeats), through the same engine as `run`, into each policy's ordinary run (so tables,
verify and resume treat them like any run). With `--sequential` the anytime-valid test of
`report.sequential` reads the pairs in that order after every round and the comparison stops at its first
decision; without it every pair up to `--max-pairs` is run and the exact McNemar test is printed.

The design (alpha, maximum pairs, alternative) is recorded in the `paired_comparisons` table the first time
and the same command resumes the comparison mid-test; a later command with another design on the same two
runs is refused, since choosing the design after seeing outcomes would void its error guarantee.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.table import Table

from qdepth_bench.cli.common import (
    DEFAULT_WORKERS,
    DbOption,
    app,
    build_policy,
    console,
    err_console,
    policy_options,
)
from qdepth_bench.cli.progress import RunProgress, command_line
from qdepth_bench.cli.run import open_run_store
from qdepth_bench.core.errors import INTERRUPTED_EXIT, UserError
from qdepth_bench.core.hashing import stable_hash
from qdepth_bench.core.policy import Policy
from qdepth_bench.core.protocol import EpisodeSpec, SuiteSpec
from qdepth_bench.eval.engine import Engine, EngineOptions
from qdepth_bench.eval.plan import MAX_ATTEMPTS, Selection, plan_run
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.report.sequential import ALTERNATIVES, SequentialDesign, SequentialResult, decide
from qdepth_bench.report.stats import mcnemar_exact
from qdepth_bench.results.comparisons import recorded_comparison, save_comparison
from qdepth_bench.results.store import Store


@dataclass
class Side:
    """One policy of the comparison: its policy object and the suite as it runs it."""

    policy: Policy
    spec: SuiteSpec


def _schedule(episodes: list[EpisodeSpec], max_pairs: int) -> list[EpisodeSpec]:
    """The order pairs are run and read in, fixed up front: tasks interleaved (episode 0 of every task, then
    episode 1, ...), repeats after all first runs, so any prefix spreads over the tasks."""
    ordered = sorted(episodes, key=lambda e: (e.repeat, e.episode_index, e.task_id))
    return ordered[:max_pairs]


def _settled(state: tuple[str, int] | None) -> bool:
    """An episode that will not be run again: scored, or an error with no attempts left (a transient error
    reads as 'transient' and is run again)."""
    if state is None:
        return False
    status, attempts = state
    return status in ("success", "failure") or (status == "error" and attempts >= MAX_ATTEMPTS)


def _pairs(
    store: Store, runs: tuple[str, str], schedule: list[EpisodeSpec]
) -> tuple[list[tuple[bool, bool]], int, int]:
    """The scored pairs in schedule order up to the first unsettled place; the places read and those lost to
    errors."""
    states = [store.episode_states(run) for run in runs]
    pairs, read, lost = [], 0, 0
    for episode in schedule:
        both = [s.get(episode.place) for s in states]
        if not all(_settled(state) for state in both):
            break
        read += 1
        a, b = (state[0] for state in both if state is not None)
        if "error" in (a, b):
            lost += 1
            continue
        pairs.append((a == "success", b == "success"))
    return pairs, read, lost


def _result_text(result: SequentialResult) -> str:
    return json.dumps(result.record(), sort_keys=True)


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
    if sequential and design.fewest_pairs() > max_pairs:
        raise UserError(
            f"--max-pairs {max_pairs} is too few for this test to ever name a policy: it needs at least "
            f"{design.fewest_pairs()} pairs at alpha {alpha:g} ({alternative}); raise --max-pairs."
        )
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
        _compare(store, sides, selection, design, sequential, round_size or workers, workers)
    finally:
        for side in sides:
            side.policy.close()


def _compare(
    store: Store,
    sides: list[Side],
    selection: Selection,
    design: SequentialDesign,
    sequential: bool,
    round_size: int,
    workers: int,
) -> None:
    command = command_line()
    tasks = ",".join(map(str, selection.tasks)) if selection.tasks is not None else None
    first = sides[0]
    # the suite's episodes once, then as many repeats as the maximum needs
    once = plan_run(store, first.spec, make_backend(first.spec), first.policy, selection, command)
    repeats = math.ceil(design.max_pairs / len(once.episodes))
    selection = dataclasses.replace(selection, repeats=repeats)
    fixed_outcomes = [s.policy.name for s in sides if not s.policy.uses_seed]
    if repeats > 1 and fixed_outcomes:
        raise UserError(
            f"--max-pairs {design.max_pairs} needs repeats of the {len(once.episodes)} episodes of these tasks, and "
            f"policy '{fixed_outcomes[0]}' does not use the episode seed: its repeats could copy its outcomes, and "
            f"the test would count one pair twice; lower --max-pairs to {len(once.episodes)} or add --tasks."
        )
    plans = [plan_run(store, s.spec, make_backend(s.spec), s.policy, selection, command) for s in sides]
    runs = (plans[0].run_id, plans[1].run_id)
    if runs[0] == runs[1]:
        raise UserError("A and B are the same policy with the same options: give two different policies.")
    schedule = _schedule(plans[0].episodes, design.max_pairs)
    comparison_id = stable_hash({"runs": runs, "tasks": tasks or "all"}, 12)
    recorded = recorded_comparison(store, comparison_id)
    fixed = {"sequential": int(sequential), "design": json.dumps(design.record(), sort_keys=True)}
    if recorded is not None and (recorded["sequential"], recorded["design"]) != (fixed["sequential"], fixed["design"]):
        raise UserError(
            f"comparison {comparison_id} of runs {runs[0]} and {runs[1]} was started with "
            f"{'--sequential, ' if recorded['sequential'] else ''}design {recorded['design']}; run it with the same "
            "options (a design chosen after seeing outcomes loses its error guarantee), or compare on other --tasks."
        )
    row = recorded or {
        "comparison_id": comparison_id,
        "run_a": runs[0],
        "run_b": runs[1],
        "suite": first.spec.name,
        "tasks": tasks or "all",
        **fixed,
        "command": command,
        "created_at": time.time(),
    }
    console.print(
        f"[bold]compare[/bold] {sides[0].policy.name} (run {runs[0]}) vs {sides[1].policy.name} (run {runs[1]}) · "
        f"{first.spec.name} · comparison {comparison_id} · "
        + (
            f"sequential, alpha {design.alpha:g}, {design.alternative}"
            if sequential
            else f"fixed, alpha {design.alpha:g}"
        )
        + f", at most {design.max_pairs} pairs"
    )
    progress, engine = RunProgress(), Engine()  # each round's pool is closed with its run
    try:
        while True:
            pairs, read, lost = _pairs(store, runs, schedule)
            exhausted = read == len(schedule)
            # once every place is read, the test is closed at the pairs it has (fewer when errors lost some)
            reading = (
                design if not exhausted else SequentialDesign(design.alpha, max(len(pairs), 1), design.alternative)
            )
            result = decide(pairs, reading)
            done = exhausted or (sequential and result.decided)
            row.update(
                status="decided" if done else "running",
                decision=result.decision if sequential else "",
                pairs_used=result.pairs_used if sequential else len(pairs),
                pairs_run=read,
                pairs_lost=lost,
                result=_result_text(result),
            )
            save_comparison(store, row)
            if done:
                break
            batch = schedule[read : read + round_size]
            console.print(f"round: pairs {read + 1}-{read + len(batch)} of at most {len(schedule)}", highlight=False)
            for side in sides:
                places = {e.place for e in batch}
                plan = plan_run(store, side.spec, make_backend(side.spec), side.policy, selection, command, only=places)
                if plan.pending:
                    with progress.running(plan) as on_episode:
                        options = EngineOptions(workers=min(workers, len(plan.pending)))
                        engine.execute(store, plan, options, on_episode)
            if _pairs(store, runs, schedule)[1] == read:
                raise UserError(
                    f"the round of pairs {read + 1}-{read + len(batch)} recorded nothing new (errors that may pass by "
                    "themselves); run the same command again to retry them."
                )
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: finished episodes are saved in {store.path}; run the same command again to continue the "
            "comparison."
        )
        raise typer.Exit(INTERRUPTED_EXIT) from None
    _print(sides, design, result, sequential, lost, pairs)


def _print(
    sides: list[Side],
    design: SequentialDesign,
    result: SequentialResult,
    sequential: bool,
    lost: int,
    pairs: list[tuple[bool, bool]],
) -> None:
    """Both policies' successes on the pairs the answer rests on, then the answer with its design."""
    names = [s.policy.name for s in sides]
    out = Table("", names[0], names[1], title="paired comparison")
    used = pairs[: result.pairs_used] if sequential else pairs
    n = len(used)
    for label, index in (("successes", 0), ("success rate", None)):
        if index is not None:
            out.add_row(label, *(str(sum(p[i] for p in used)) + f"/{n}" for i in (0, 1)))
        elif n:
            out.add_row(label, *(f"{100 * sum(p[i] for p in used) / n:.1f}%" for i in (0, 1)))
    only = [sum(1 for p in used if p[i] and not p[1 - i]) for i in (0, 1)]
    out.add_row("succeeded alone", str(only[0]), str(only[1]))
    console.print(out)
    if lost:
        err_console.print(f"{lost} pairs had an episode that ended in an error and are left out.")
    if not sequential:
        console.print(f"exact McNemar over {n} pairs: p = {mcnemar_exact(only[0], only[1]):.3g}", highlight=False)
        return
    verdict = {
        "a-better": f"{names[0]} is better",
        "b-better": f"{names[1]} is better",
        "no-difference": "no difference detected within the maximum",
        "undecided": "undecided: every pair was lost to errors",
    }[result.decision]
    record = result.record()
    console.print(
        f"decision: {verdict} after {result.pairs_used} pairs ({2 * result.pairs_used} episodes); e-values "
        f"A {record['e_value_a']:.3g}, B {record['e_value_b']:.3g} against "
        f"{1 / design.level():.3g} (alpha {design.alpha:g}, {design.alternative}, at most {design.max_pairs} pairs)",
        highlight=False,
    )

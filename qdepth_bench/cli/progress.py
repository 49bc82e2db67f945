"""What an evaluation shows on the terminal, shared by the commands that evaluate (`run`, `ablation --run`,
`verify`, `compare`, `ablation --sequential`): a header line per suite, a progress bar per plan, and a
closing line on where the time went; a comparison adds its own header and a line per round. A training's
progress (`train policy`, `ablation --train`) is here too."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from qdepth_bench.cli.common import DEFAULT_WORKERS, console, err_console
from qdepth_bench.core.errors import INTERRUPTED_EXIT
from qdepth_bench.core.policy import Policy
from qdepth_bench.core.protocol import SuiteSpec
from qdepth_bench.eval.engine import Engine, EngineOptions, EngineStats
from qdepth_bench.eval.episode import EpisodeResult
from qdepth_bench.eval.evaluate import evaluate
from qdepth_bench.eval.plan import RunPlan, Selection
from qdepth_bench.eval.sequential_compare import Comparison, ComparisonOutcome
from qdepth_bench.eval.timing import describe
from qdepth_bench.report.stats import mcnemar_exact
from qdepth_bench.results.store import Store


def command_line() -> str:
    """This invocation as a shell command, recorded with the runs it makes."""
    return shlex.join(["qdepth-bench", *sys.argv[1:]])


def _execution_note(policy: Policy, spec: SuiteSpec) -> str:
    """Said up front when the policy's chunks are shorter than the protocol's replan steps (tables mark it)."""
    chunk, replan = policy.requirements.chunk_size, int(spec.protocol["replan_steps"])
    if chunk >= replan:
        return ""
    return (
        f" · [yellow]chunks of {chunk} < the protocol's {replan} replan steps: it re-plans every {chunk} "
        f"(non-standard execution, marked ‡)[/yellow]"
    )


class RunProgress:
    """The `eval.evaluate.RunObserver` of the terminal."""

    def planned(self, plan: RunPlan, options: EngineOptions, asked_workers: int) -> None:
        spec, done = plan.spec, len(plan.episodes) - len(plan.pending)
        console.print(
            f"[bold]{spec.name}[/bold] · policy [bold]{plan.policy.name}[/bold] · run {plan.run_id} · "
            f"{len(plan.episodes)} episodes ({done} already recorded)"
            + ("" if spec.is_standard() else " · [yellow]non-standard protocol[/yellow]")
            + _execution_note(plan.policy, spec)
        )
        for notice in plan.notices:
            err_console.print(notice, markup=False, highlight=False, soft_wrap=True)
        if plan.pending and options.workers < asked_workers > DEFAULT_WORKERS:  # asked for, not the default
            err_console.print(
                f"--workers {asked_workers}: {len(plan.pending)} episodes to run, so {options.workers} workers."
            )

    @contextmanager
    def running(self, plan: RunPlan) -> Iterator[Callable[[EpisodeResult], None]]:
        """A progress bar (rate, errors, env steps/s) over the plan's pending episodes."""
        counts = {"success": 0, "failure": 0, "error": 0, "retry": 0, "steps": 0}
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress:
            bar = progress.add_task(plan.spec.name, total=len(plan.pending), stats="")

            def on_episode(result: EpisodeResult) -> None:
                counts["retry" if result.will_retry else result.status] += 1
                counts["steps"] += result.steps
                scored = counts["success"] + counts["failure"]
                rate = f"{100 * counts['success'] / scored:.1f}%" if scored else "–"
                elapsed = progress.tasks[0].elapsed or 1e-9
                progress.update(
                    bar,
                    advance=0 if result.will_retry else 1,
                    stats=f"success {rate} · errors {counts['error']} · retried {counts['retry']} · "
                    f"{counts['steps'] / elapsed:.1f} env steps/s",
                )
                if result.status == "error":
                    again = " (will run it again)" if result.will_retry else ""
                    progress.console.print(
                        f"[red]episode {result.episode.key} error{again}:[/red] {escape(result.error)}",
                        markup=True,
                        highlight=False,
                    )

            yield on_episode

    def ran(self, plan: RunPlan, stats: EngineStats) -> None:
        """Where the time went."""
        if stats.episode_timings:
            first_call = "" if stats.first_call_s is None else f"first policy call after {stats.first_call_s:.1f} s; "
            console.print(f"time: {first_call}{describe(stats.phases)}", highlight=False)


class ComparisonProgress(RunProgress):
    """The `eval.sequential_compare.ComparisonObserver` of the terminal."""

    def compared(self, comparison: Comparison) -> None:
        (a, b), (run_a, run_b), design = comparison.sides, comparison.runs, comparison.design
        console.print(
            f"[bold]compare[/bold] {a.policy.name} (run {run_a}) vs {b.policy.name} (run {run_b}) · "
            f"{a.spec.name} · comparison {comparison.comparison_id} · "
            + (
                f"sequential, alpha {design.alpha:g}, {design.alternative}"
                if comparison.sequential
                else f"fixed, alpha {design.alpha:g}"
            )
            + f", at most {design.max_pairs} pairs"
        )

    def round(self, first: int, last: int, total: int) -> None:
        console.print(f"round: pairs {first}-{last} of at most {total}", highlight=False)

    def decided(self, outcome: ComparisonOutcome) -> None:
        """Both policies' successes on the pairs the answer rests on, then the answer with its design."""
        comparison, result, used = outcome.comparison, outcome.result, outcome.used
        names = [s.policy.name for s in comparison.sides]
        out = Table("", names[0], names[1], title="paired comparison")
        n = len(used)
        out.add_row("successes", *(f"{sum(p[i] for p in used)}/{n}" for i in (0, 1)))
        if n:
            out.add_row("success rate", *(f"{100 * sum(p[i] for p in used) / n:.1f}%" for i in (0, 1)))
        only = [sum(1 for p in used if p[i] and not p[1 - i]) for i in (0, 1)]
        out.add_row("succeeded alone", str(only[0]), str(only[1]))
        console.print(out)
        if outcome.lost:
            err_console.print(f"{outcome.lost} pairs had an episode that ended in an error and are left out.")
        if not comparison.sequential:
            console.print(f"exact McNemar over {n} pairs: p = {mcnemar_exact(only[0], only[1]):.3g}", highlight=False)
            return
        verdict = {
            "a-better": f"{names[0]} is better",
            "b-better": f"{names[1]} is better",
            "no-difference": "no difference detected within the maximum",
            "undecided": "undecided: every pair was lost to errors",
        }[result.decision]
        record, design = result.record(), comparison.design
        console.print(
            f"decision: {verdict} after {result.pairs_used} pairs ({2 * result.pairs_used} episodes); e-values "
            f"A {record['e_value_a']:.3g}, B {record['e_value_b']:.3g} against {1 / design.level():.3g} "
            f"(alpha {design.alpha:g}, {design.alternative}, at most {design.max_pairs} pairs)",
            highlight=False,
        )


def evaluate_with_progress(
    store: Store,
    specs: Sequence[SuiteSpec],
    policy: Policy,
    selection: Selection,
    options: EngineOptions,
    engine: Engine | None = None,
) -> list[RunPlan]:
    """`eval.evaluate.evaluate` on the terminal; Ctrl-C says what is kept and exits 130."""
    try:
        return evaluate(store, specs, policy, selection, options, command_line(), RunProgress(), engine)
    except KeyboardInterrupt:
        if store.db.table("episodes").count:
            said = f"interrupted: finished episodes are saved in {store.path}; run the same command again to continue."
        else:
            said = "interrupted before any episode finished; run the same command again to start."
        err_console.print(said)
        raise typer.Exit(INTERRUPTED_EXIT) from None


def print_training_log(row: dict[str, Any]) -> None:
    """A training's logged row as one line (where no progress bar is drawn)."""
    console.print("  " + "  ".join(f"{k} {v}" for k, v in row.items()), highlight=False)


def _ignore_start(step: int, steps: int) -> None:
    """Log lines need no total (a terminal's progress bar does)."""


@dataclass(frozen=True)
class TrainingHooks:
    """What a training reports to: each logged row, and its length once known (an `epochs` recipe's steps
    are known when its data is opened)."""

    on_log: Callable[[dict[str, Any]], None]
    on_start: Callable[[int, int], None]


@contextmanager
def training_progress(label: str, steps: int = 0, start: int = 0) -> Iterator[TrainingHooks]:
    """A progress bar over training steps (step, loss, ETA) on a terminal; log lines elsewhere (CI, files).
    `steps` 0: the length comes with `on_start`."""
    if not console.is_terminal:
        yield TrainingHooks(print_training_log, _ignore_start)
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(label, total=steps or None, completed=start, loss="")

        def on_log(row: dict[str, Any]) -> None:
            losses = "  ".join(f"{k} {row[k]:.4g}" for k in ("total", "flow", "depth") if isinstance(row.get(k), float))
            progress.update(bar, completed=int(row["step"]) + 1, loss=losses)

        def on_start(step: int, total: int) -> None:
            progress.update(bar, total=total, completed=step)

        yield TrainingHooks(on_log, on_start)

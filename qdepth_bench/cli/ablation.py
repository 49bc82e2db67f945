"""`qdepth-bench ablation NAME [--train] [--run | --sequential]`: an ablation table, and everything it takes
to make one.

With `--train` every (variant, training seed) without a checkpoint is trained from its variant's recipe,
each stage of its chain in order (`init_from`: ancestors first, at the member's seed; a stage whose policy
is exported is not trained again; an interrupted one continues from its last checkpoint), after a check that
every dataset, backbone and VQ-VAE the stages read is in place (one line per missing input, nothing
started otherwise); with `--run` every trained one is evaluated
on the ablation's tasks (a run already recorded is resumed, not repeated); then the table is rendered. The
plan is printed first and worked through one model at a time, trained and then evaluated, so the whole
plan's progress shows item by item and results land as each model is ready.

With `--sequential` (`--run` or not) the evaluation is instead one sequential paired comparison per variant
and training seed against the full model of the same seed (`eval.sequential_compare`, as `compare
--sequential`), each stopping at its own decision; the family's alpha is split over the comparisons
(Bonferroni), so the chance that any of them names a model better when none is stays at most alpha.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from qdepth_bench.cli.common import (
    DEFAULT_WORKERS,
    DbOption,
    FormatOption,
    app,
    build_policy,
    console,
    err_console,
    open_run_store,
    open_store,
    print_views,
    progress_on_stderr,
)
from qdepth_bench.cli.progress import ComparisonProgress, command_line, evaluate_with_progress, training_progress
from qdepth_bench.core.errors import INTERRUPTED_EXIT, UserError
from qdepth_bench.core.policy import Policy
from qdepth_bench.eval.engine import EngineOptions
from qdepth_bench.eval.plan import Selection
from qdepth_bench.eval.sequential import SequentialDesign
from qdepth_bench.eval.sequential_compare import Side, refuse_undecidable, run_comparison
from qdepth_bench.registry.ablations import AblationSpec, Member
from qdepth_bench.registry.policies import policy_registry
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.results.store import Store


def policy_options(spec: AblationSpec, member: Member) -> dict[str, Any]:
    """How the policy is told to load this member's checkpoint: by its path relative to the content root
    (so the run's identity is the same on every machine), or nothing when that is the policy's default."""
    if member.checkpoint is None:
        return {}
    if spec.root is None or not member.checkpoint.is_relative_to(spec.root):
        return {"checkpoint": str(member.checkpoint)}
    relative = member.checkpoint.relative_to(spec.root).as_posix()
    default = policy_registry().get(member.variant.policy).options.get("default_checkpoint")
    return {} if relative == default else {"default_checkpoint": relative}


def _plan_lines(spec: AblationSpec, store: Store, members: list[Member], train: bool) -> list[str]:
    from qdepth_bench.report.ablation import member_episodes
    from qdepth_bench.report.episodes import load_episodes
    from qdepth_bench.train.members import member_recipe
    from qdepth_bench.train.stages import pending_stages

    frame = load_episodes(store, None, None, stand_ins=bool(spec.protocol.get("stand_ins")))
    frame = frame[frame["suite"] == spec.suite]
    lines = []
    for member in members:
        if member.trained:
            trained = "trained" if member.checkpoint is not None else "no training"
        elif train:
            stages = pending_stages(member_recipe(member))
            trained = "to train: " + " -> ".join(_stage_plan(stage, step) for stage, step in stages)
        else:
            trained = "not trained (--train trains it)"
        recorded = len(member_episodes(frame, member))
        lines.append(f"  {member.name:<34} {trained:<58} {recorded} episodes recorded")
    return lines


def _stage_plan(stage: Any, step: int | None) -> str:
    """One stage of a member's plan: its length and where it continues, or that it only awaits installing."""
    from qdepth_bench.train.stages import stage_done

    if stage_done(stage):
        return f"{stage.name} (trained: to install)"
    if step:
        return f"{stage.name} from step {step}" + (
            f"/{stage.train.steps}" if stage.train.steps else f" of {stage.length}"
        )
    return f"{stage.name} ({stage.length})"


@app.command()
def ablation(
    name: Annotated[str, typer.Argument(help="ablation id (content/ablations/<id>.yaml), e.g. table6")],
    reference: Annotated[bool, typer.Option("--reference/--no-reference", help="show the published ablation")] = True,
    train: Annotated[
        bool, typer.Option("--train", help="first train each variant and seed that has no checkpoint (resumable)")
    ] = False,
    run_missing: Annotated[
        bool, typer.Option("--run", help="first evaluate each trained variant and seed (a recorded run resumes)")
    ] = False,
    seeds: Annotated[
        int | None, typer.Option(min=1, help="training seeds per trained variant (default: each variant's own)")
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="with --run/--sequential: task ids (default: the ablation's columns)")
    ] = None,
    episodes: Annotated[
        int | None,
        typer.Option(
            min=1, help="with --run/--sequential: episodes per task (default: the ablation's, else the protocol's)"
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="with --run/--sequential: env worker processes")
    ] = DEFAULT_WORKERS,
    sequential: Annotated[
        bool,
        typer.Option(
            "--sequential",
            help="evaluate by sequential paired comparisons, each variant against the full model, each stopping "
            "at its decision (resumable)",
        ),
    ] = False,
    alpha: Annotated[
        float, typer.Option(help="with --sequential: chance that any comparison names a model better when none is")
    ] = 0.05,
    max_pairs: Annotated[
        int | None,
        typer.Option(min=1, help="with --sequential: paired episodes per comparison at most (default: all of them)"),
    ] = None,
    round_size: Annotated[
        int | None, typer.Option(min=1, help="with --sequential: pairs per round (default: --workers)")
    ] = None,
    fmt: FormatOption = "rich",
    out: Annotated[Path | None, typer.Option(help="write to this file instead of printing")] = None,
    db: DbOption = None,
) -> None:
    """An ablation table (components, per-task success, change vs the full model, paired tests, training
    seeds), optionally training and evaluating its variants first."""
    from qdepth_bench.registry.ablations import ablation_spec
    from qdepth_bench.report.ablation import build_ablation

    spec = ablation_spec(name)
    members = spec.members(seeds)
    if train:
        _check_inputs(spec, members)
    store = open_run_store(db) if run_missing or sequential else open_store(db)
    if train or run_missing or sequential:
        err_console.print(f"[bold]{spec.id}[/bold]: {len(members)} models (variant x training seed)")
        for line in _plan_lines(spec, store, members, train):
            err_console.print(line, markup=False, highlight=False)
    with progress_on_stderr(fmt.lower() != "rich" and out is None):
        if train or run_missing:
            _work_through(store, spec, members, train, run_missing and not sequential, tasks, episodes, workers)
        if sequential:
            selection = Selection.parse(tasks or spec.task_ids, episodes or spec.episodes)
            options = EngineOptions(workers=workers)
            _compare_variants(store, spec, members, selection, options, alpha, max_pairs, round_size or workers)
    views = build_ablation(store, spec, reference, seeds)
    if not views:
        err_console.print(
            f"no results in {store.path} for the variants of {spec.id} on {spec.suite} "
            f"({', '.join(v.policy for v in spec.variants)}); record them with --run or "
            "`qdepth-bench run`."
        )
        return
    print_views(views, fmt, out)


def _work_through(
    store: Store,
    spec: AblationSpec,
    members: list[Member],
    train: bool,
    run_missing: bool,
    tasks: str | None,
    episodes: int | None,
    workers: int,
) -> None:
    """Each member in turn: train it (with --train, when it has no checkpoint), then evaluate it (with
    --run). Seed 0 of every variant comes first, and a member is evaluated as soon as it is trained, so a plan
    stopped anywhere leaves every finished model with its results, and a one-seed table before extra seeds."""
    ordered = sorted(members, key=lambda m: m.seed)
    to_train = [m for m in ordered if train and not m.trained]
    to_run = [m for m in ordered if m.trained or m in to_train] if run_missing else []
    if run_missing:
        skipped = [m.name for m in ordered if m not in to_run]
        if skipped:
            err_console.print(f"not evaluated, no checkpoint yet (train with --train): {', '.join(skipped)}")
        if not to_run and members:
            raise UserError(f"nothing of {spec.id} is trained yet; add --train to train it first.")
    suite = [s.with_overrides(spec.protocol) for s in suite_registry().resolve(spec.suite)] if to_run else None
    selection = Selection.parse(tasks or spec.task_ids, episodes or spec.episodes) if to_run else Selection()
    for member in ordered:
        if member in to_train:
            _train(member, to_train.index(member) + 1, len(to_train))
        if suite is not None and member in to_run:
            console.print(
                f"[bold]\\[run {to_run.index(member) + 1}/{len(to_run)}][/bold] {member.name}", highlight=False
            )
            policy = build_policy(member.variant.policy, policy_options(spec, member))
            try:
                evaluate_with_progress(store, suite, policy, selection, EngineOptions(workers=workers))
            finally:
                policy.close()


def _compare_variants(
    store: Store,
    spec: AblationSpec,
    members: list[Member],
    selection: Selection,
    options: EngineOptions,
    alpha: float,
    max_pairs: int | None,
    round_size: int,
) -> None:
    """Each variant's training seed against the full model's same seed, one sequential comparison after
    another, each to its own decision. The family is every such pair the ablation declares (trained or not),
    fixed before the first episode: each comparison gets alpha / that many (Bonferroni), recorded with its
    design, so a later command that would split alpha otherwise is refused rather than resuming."""
    full = {m.seed: m for m in members if m.variant.policy == spec.full}
    pairs = [(full[m.seed], m) for m in members if m.variant.policy != spec.full and m.seed in full]
    if not pairs:
        raise UserError(f"{spec.id} has no variant with a training seed of its full model {spec.full} to compare.")
    suites = suite_registry().resolve(spec.suite)
    if len(suites) != 1:
        raise UserError(f"{spec.id}: suite {spec.suite} is a group; a sequential ablation compares on one suite.")
    suite = suites[0]
    episodes = len(selection.task_ids(suite)) * (selection.episodes or suite.episodes_per_task)
    design = SequentialDesign(alpha / len(pairs), max_pairs or episodes, "two-sided")
    family = {"ablation": spec.id, "alpha": alpha, "comparisons": len(pairs), "correction": "Bonferroni"}
    refuse_undecidable(design)
    ready = [(a, b) for a, b in pairs if a.trained and b.trained]
    if len(ready) < len(pairs):
        waiting = ", ".join(b.name for a, b in pairs if (a, b) not in ready)
        err_console.print(f"not compared, a checkpoint is missing (train with --train): {waiting}")
    console.print(
        f"[bold]{spec.id}[/bold]: {len(pairs)} sequential comparisons with {spec.full}, alpha {alpha:g} split by "
        f"Bonferroni: {design.alpha:.4g} each (two-sided), at most {design.max_pairs} pairs each",
        highlight=False,
    )
    policies: dict[Member, Policy] = {}
    try:
        for number, (a, b) in enumerate(ready, 1):
            console.print(f"[bold]\\[compare {number}/{len(ready)}][/bold] {b.name} vs {a.name}", highlight=False)
            for member in (a, b):
                if member not in policies:
                    policies[member] = build_policy(member.variant.policy, policy_options(spec, member))
            sides = tuple(Side(policies[m], suite.for_policy(policies[m].requirements)) for m in (a, b))
            run_comparison(
                store,
                (sides[0], sides[1]),
                selection,
                design,
                options,
                command_line(),
                ComparisonProgress(),
                round_size=round_size,
                family=family,
            )
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: finished episodes and decisions are saved in {store.path}; run the same command again to "
            "continue the comparisons."
        )
        raise typer.Exit(INTERRUPTED_EXIT) from None
    finally:
        for policy in policies.values():
            policy.close()


def _check_inputs(spec: AblationSpec, members: list[Member]) -> None:
    """Before anything starts: every input the untrained members' stages read, one line per missing one."""
    from qdepth_bench.train.members import member_recipe
    from qdepth_bench.train.stages import missing_inputs

    missing = missing_inputs([member_recipe(m) for m in members if not m.trained])
    if missing:
        raise UserError(
            f"{spec.id} cannot be trained here: {len(missing)} input(s) missing; nothing was started.\n  "
            + "\n  ".join(missing)
        )


def _train(member: Member, number: int, total: int) -> None:
    """Each stage of the member's chain still to train, ancestors first; the last is installed."""
    from qdepth_bench.train.members import member_recipe, train_member
    from qdepth_bench.train.policy import train_policy
    from qdepth_bench.train.stages import pending_stages

    recipe = member_recipe(member)
    stages = pending_stages(recipe)
    for index, (stage, step) in enumerate(stages, 1):
        of = f" stage {index}/{len(stages)}" if len(stages) > 1 else ""
        console.print(
            f"[bold]\\[train {number}/{total}][/bold] {member.name}{of}: recipe {stage.name}, {stage.length}"
            + (f", continuing from step {step}" if step else "")
            + (f" -> {member.checkpoint}" if stage is recipe else f" -> {stage.out}"),
            highlight=False,
        )
        try:
            with training_progress(f"{member.name}: {stage.name}", stage.train.steps, step or 0) as hooks:
                if stage is recipe:
                    train_member(member, recipe, step is not None, hooks.on_log, hooks.on_start)
                else:
                    train_policy(stage, step is not None, hooks.on_log, on_start=hooks.on_start)
        except KeyboardInterrupt:
            err_console.print(
                f"interrupted: the training of {member.name} ({stage.name}) continues from its last checkpoint in "
                f"{stage.out} when you run the same command again."
            )
            raise typer.Exit(INTERRUPTED_EXIT) from None

"""The sequential paired test's decisions, its evidence against hand-computed values, and its error under the
null on a small simulation (the full check is benchmarks/sequential_error_control.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qdepth_bench.core.errors import UserError
from qdepth_bench.eval.sequential import (
    A_BETTER,
    B_BETTER,
    DEFAULT_GRID,
    NO_DIFFERENCE,
    UNDECIDED,
    SequentialDesign,
    decide,
    decide_all,
    log_evidence,
)


def test_evidence_is_the_mixture_of_likelihood_ratios():
    """3 discordant pairs won by A, 1 by B: the mean over the grid of (2q)^3 (2(1-q))^1."""
    expected = sum((2 * q) ** 3 * (2 * (1 - q)) for q in DEFAULT_GRID) / len(DEFAULT_GRID)
    assert float(np.exp(log_evidence(np.array(3), np.array(1)))) == pytest.approx(expected, rel=1e-12)
    assert float(log_evidence(np.array(0), np.array(0))) == pytest.approx(0.0, abs=1e-12)


def test_a_policy_that_wins_every_discordant_pair_is_named_as_soon_as_the_evidence_crosses():
    design = SequentialDesign(alpha=0.05, max_pairs=100)
    result = decide([(True, False)] * 30, design)
    assert result.decision == A_BETTER
    # the first n at which the mixture reaches 2 / alpha (two-sided: alpha / 2 per direction)
    first = next(n for n in range(1, 30) if float(log_evidence(np.array(n), np.array(0))) >= math.log(40))
    assert result.pairs_used == first and result.a_only == first and result.b_only == 0
    assert design.fewest_pairs() == first
    mirrored = decide([(False, True)] * 30, design)
    assert mirrored.decision == B_BETTER and mirrored.pairs_used == first


def test_concordant_pairs_carry_no_evidence_and_the_test_stops_when_no_answer_is_reachable():
    design = SequentialDesign(alpha=0.05, max_pairs=50)
    agreeing = decide([(True, True), (False, False)] * 25, design)
    assert agreeing.decision == NO_DIFFERENCE
    # it stops once even all remaining pairs won by one side could not reach the threshold
    first = next(n for n in range(50) if float(log_evidence(np.array(n), np.array(0))) >= math.log(40))
    assert agreeing.pairs_used == 50 - first + 1
    assert agreeing.a_successes == agreeing.b_successes == (agreeing.pairs_used + 1) // 2


def test_too_few_pairs_leave_the_test_undecided():
    design = SequentialDesign(alpha=0.05, max_pairs=100)
    result = decide([(True, False), (False, True), (True, True)], design)
    assert result.decision == UNDECIDED and not result.decided and result.pairs_used == 3
    assert decide([], design).decision == UNDECIDED


def test_a_one_sided_design_never_names_the_other_side():
    design = SequentialDesign(alpha=0.05, max_pairs=40, alternative="a-better")
    result = decide([(False, True)] * 40, design)
    assert result.decision == NO_DIFFERENCE
    # one direction gets all of alpha: it decides earlier than a two-sided design
    one = decide([(True, False)] * 40, design).pairs_used
    two = decide([(True, False)] * 40, SequentialDesign(alpha=0.05, max_pairs=40)).pairs_used
    assert one < two


def test_pairs_after_the_decision_are_ignored():
    design = SequentialDesign(alpha=0.05, max_pairs=100)
    decided = decide([(True, False)] * 20, design)
    extended = decide([(True, False)] * 20 + [(False, True)] * 20, design)
    assert extended.record() == decided.record()


def test_type_one_error_under_the_null_stays_below_alpha_at_every_look():
    """2000 null sequences of 200 pairs, half of them discordant: rejections at most alpha + 3 SE."""
    rng = np.random.default_rng(7)
    outcomes = rng.choice(np.array([1, -1, 0]), p=[0.25, 0.25, 0.5], size=(2000, 200))
    code, _ = decide_all(outcomes, SequentialDesign(alpha=0.05, max_pairs=200))
    assert np.isin(code, (1, -1, 0)).all()
    assert (code != 0).mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_bad_designs_are_refused_with_the_option_to_fix():
    with pytest.raises(UserError, match="--alpha"):
        SequentialDesign(alpha=1.5)
    with pytest.raises(UserError, match="--max-pairs"):
        SequentialDesign(max_pairs=0)
    with pytest.raises(UserError, match="--alternative"):
        SequentialDesign(alternative="bigger")


def test_compare_refuses_a_maximum_too_small_to_ever_decide(cli):
    fewest = SequentialDesign(alpha=0.05).fewest_pairs()
    result = cli(
        "compare", "noop", "random", "--suite", "libero_object", "--sequential", "--max-pairs", str(fewest - 1)
    )
    assert result.exit_code == 2 and f"at least {fewest} pairs" in result.output and "--max-pairs" in result.output

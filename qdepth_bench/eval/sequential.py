"""An anytime-valid sequential test for two policies run on the same episodes (paired rounds).

Why sequential: evaluation episodes are the expensive part, and a clear difference shows after a fraction
of a fixed design's episodes. Looking at a fixed-n test after every round and stopping at the first
p < alpha inflates its error far beyond alpha; a test whose error holds at every look may stop early.

The method is a test martingale (an e-process, "safe anytime-valid inference": Ramdas, Grünwald, Vovk and
Shafer, "Game-theoretic statistics and safe anytime-valid inference", Statistical Science 2023; Ville's
inequality, 1939). Only discordant pairs carry information (one policy succeeded, the other failed). Under
the null hypothesis that the two policies are exchangeable within each pair (equally good on every initial
state), each discordant pair is "A only" with probability 1/2 whatever came before. For a fixed q > 1/2,

    L_q = prod over discordant pairs of (2q if A only, else 2(1 - q))

has expectation 1 under the null at every stopping time, and so has any average of such L_q over a fixed
grid of q (the mixture below). Ville's inequality then bounds the chance that the mixture ever reaches
1 / alpha by alpha, however often one looks. The mirror image (q < 1/2) tests "B better". With a two-sided
alternative each direction gets alpha / 2, so the chance of naming either policy better when neither is
stays at most alpha, and the chance of naming the worse one better is at most alpha / 2 (each mirror is a
supermartingale whenever the truth lies on the other side). The test also stops as soon as no sequence
of the remaining pairs could reach a threshold: that can only stop for "no difference", so it costs no
error and saves the episodes that could not change the answer.

Everything the decision depends on (alpha, the maximum pairs, the alternative, the grid) is fixed before
the first episode and recorded with the result. `benchmarks/sequential_error_control.py` checks the error
rates by simulation, beside the fixed-n exact McNemar test of `report.stats`. It sits in the eval layer
because it decides when a comparison stops running episodes (`eval.sequential_compare`); reports read it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from qdepth_bench.core.errors import UserError

#: the directions the test may be asked to find
ALTERNATIVES = ("two-sided", "a-better", "b-better")
#: share of discordant pairs won by the better policy that the mixture averages over (uniform weights):
#: from a slight edge to one policy winning nearly every discordant pair
DEFAULT_GRID = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)

#: decisions, as recorded
A_BETTER, B_BETTER, NO_DIFFERENCE, UNDECIDED = "a-better", "b-better", "no-difference", "undecided"
#: `decide_all`'s decision codes
_CODES = {1: A_BETTER, -1: B_BETTER, 0: NO_DIFFERENCE, 2: UNDECIDED}


@dataclass(frozen=True)
class SequentialDesign:
    """What is fixed before the first episode; recorded with every result so the decision can be checked."""

    alpha: float = 0.05
    max_pairs: int = 200
    alternative: str = "two-sided"
    grid: tuple[float, ...] = DEFAULT_GRID
    method: str = field(default="mixture e-process on discordant pairs (Ville)", init=False)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha must lie between 0 and 1 (got {self.alpha:g}).")
        if self.max_pairs < 1:
            raise UserError(f"--max-pairs must be at least 1 (got {self.max_pairs}).")
        if self.alternative not in ALTERNATIVES:
            raise UserError(f"--alternative '{self.alternative}' is not one of {', '.join(ALTERNATIVES)}.")
        if not self.grid or not all(0.5 < q < 1 for q in self.grid):
            raise UserError("the mixture grid needs shares strictly between 0.5 and 1.")

    def level(self) -> float:
        """The error each tested direction may spend: alpha / 2 each when both are tested."""
        return self.alpha / 2 if self.alternative == "two-sided" else self.alpha

    def thresholds(self) -> tuple[float, float]:
        """log thresholds for (A better, B better); inf for a direction not tested."""
        level = float(np.log(1 / self.level()))
        return (
            level if self.alternative != "b-better" else np.inf,
            level if self.alternative != "a-better" else np.inf,
        )

    def fewest_pairs(self) -> int:
        """Discordant pairs, all won by one side, that it takes to name that side: a maximum below it can
        only ever answer "no difference"."""
        needed = min(self.thresholds())
        n = 1
        while float(log_evidence(np.array(n), np.array(0), self.grid)) < needed:
            n += 1
        return n

    def record(self) -> dict[str, object]:
        return {**asdict(self), "grid": list(self.grid)}


def log_evidence(wins: np.ndarray, losses: np.ndarray, grid: tuple[float, ...] = DEFAULT_GRID) -> np.ndarray:
    """log of the mixture martingale for "the side with `wins` is better", element-wise.

    `wins` and `losses` count the discordant pairs won by that side and by the other."""
    q = np.asarray(grid, dtype=float)
    wins, losses = np.asarray(wins, dtype=float)[..., None], np.asarray(losses, dtype=float)[..., None]
    terms = wins * np.log(2 * q) + losses * np.log(2 * (1 - q))
    top = terms.max(axis=-1)
    return top + np.log(np.exp(terms - top[..., None]).mean(axis=-1))


def decide_all(outcomes: np.ndarray, design: SequentialDesign) -> tuple[np.ndarray, np.ndarray]:
    """Run the test on many paired sequences at once: `outcomes` (sequences x pairs) holds +1 where only A
    succeeded, -1 where only B did and 0 where both agreed. Returns, per sequence, the decision code (1: A
    better, -1: B better, 0: no difference within the maximum, 2: undecided, more pairs needed) and the
    number of pairs used when it stopped (all given pairs when undecided).

    Only the first `design.max_pairs` pairs are read."""
    outcomes = np.atleast_2d(np.asarray(outcomes))[:, : design.max_pairs]
    n_seq, n = outcomes.shape
    a_wins = np.cumsum(outcomes == 1, axis=1)
    b_wins = np.cumsum(outcomes == -1, axis=1)
    up, down = design.thresholds()
    a_hit = log_evidence(a_wins, b_wins, design.grid) >= up
    b_hit = log_evidence(b_wins, a_wins, design.grid) >= down
    # no remaining sequence of pairs can reach a threshold: the best case for a side is every remaining pair
    # going its way, so neither can cross once that best case stays below its threshold
    left = design.max_pairs - np.arange(1, n + 1)
    hopeless = (log_evidence(a_wins + left, b_wins, design.grid) < up) & (
        log_evidence(b_wins + left, a_wins, design.grid) < down
    )
    stop = a_hit | b_hit | hopeless
    stopped = stop.any(axis=1)
    first = np.where(stopped, stop.argmax(axis=1), n - 1)
    rows = np.arange(n_seq)
    code = np.where(a_hit[rows, first], 1, np.where(b_hit[rows, first], -1, 0))
    code = np.where(stopped, code, 2)
    return code, np.where(stopped, first + 1, n)


@dataclass(frozen=True)
class SequentialResult:
    """The test's state after the pairs given to `decide`: decided or not, with its counts."""

    design: SequentialDesign
    decision: str
    #: pairs read up to the decision (all given pairs while undecided)
    pairs_used: int
    a_only: int
    b_only: int
    a_successes: int
    b_successes: int
    #: log evidence for each direction at the pairs used
    log_evidence_a: float
    log_evidence_b: float

    @property
    def decided(self) -> bool:
        return self.decision != UNDECIDED

    def record(self) -> dict[str, object]:
        return {
            "decision": self.decision,
            "pairs_used": self.pairs_used,
            "a_only": self.a_only,
            "b_only": self.b_only,
            "a_successes": self.a_successes,
            "b_successes": self.b_successes,
            "e_value_a": float(np.exp(self.log_evidence_a)),
            "e_value_b": float(np.exp(self.log_evidence_b)),
        }


def decide(pairs: Iterable[tuple[bool, bool]], design: SequentialDesign) -> SequentialResult:
    """The test on one sequence of paired outcomes (A succeeded, B succeeded), read in order up to the first
    decision; the pairs after it are ignored (they were run in the same round, after the answer was clear)."""
    given = [(bool(a), bool(b)) for a, b in pairs]
    outcomes = np.array([int(a) - int(b) for a, b in given], dtype=int)
    if not given:
        nothing = float(log_evidence(np.array(0), np.array(0), design.grid))
        return SequentialResult(design, UNDECIDED, 0, 0, 0, 0, 0, nothing, nothing)
    code, used = decide_all(outcomes, design)
    read = given[: int(used[0])]
    a_only = sum(1 for a, b in read if a and not b)
    b_only = sum(1 for a, b in read if b and not a)
    return SequentialResult(
        design,
        _CODES[int(code[0])],
        int(used[0]),
        a_only,
        b_only,
        sum(a for a, _ in read),
        sum(b for _, b in read),
        float(log_evidence(np.array(a_only), np.array(b_only), design.grid)),
        float(log_evidence(np.array(b_only), np.array(a_only), design.grid)),
    )

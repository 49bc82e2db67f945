"""Statistics for success rates."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion; (nan, nan) for n = 0.

    Wilson rather than the normal approximation because success rates sit near 0 and 1 with small n,
    where the normal interval leaves [0, 1] or collapses to a point.
    """
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes.

    Two policies run on the same episodes (same task, same initial state); only the discordant pairs carry
    information: `only_first` episodes succeeded for the first policy alone, `only_second` for the second
    alone. Under "no difference" each discordant pair goes either way with probability 1/2, so the count is
    Binomial(b + c, 1/2); the p-value doubles the smaller tail (capped at 1). With no discordant pairs the
    outcomes are identical and p = 1.
    """
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)

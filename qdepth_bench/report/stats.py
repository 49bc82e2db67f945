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


def _log_binomial(n: int, k: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def mcnemar_power(p_first: float, p_second: float, pairs: int, alpha: float = 0.05) -> float:
    """Probability that the exact McNemar test rejects at `alpha` when two policies with these success rates
    run `pairs` paired episodes whose outcomes are independent between the policies.

    Independence is the least favourable case a paired design can meet: outcomes that agree more (both fail
    the hard initial states) leave fewer discordant pairs at the same rates, and the test finds the
    difference more often. So this power, and the change derived from it, is conservative.
    """
    only_first, only_second = p_first * (1 - p_second), p_second * (1 - p_first)
    discordant = only_first + only_second
    if discordant <= 0:
        return 0.0
    share = only_first / discordant
    power = 0.0
    for d in range(1, pairs + 1):
        weight = math.exp(_log_binomial(pairs, d, discordant))
        if weight < 1e-15:
            continue
        # the test rejects when the smaller count is at most k: find that k, then the chance of either tail
        k, tail = -1, 0.0
        while k + 1 <= d // 2:
            step = math.exp(_log_binomial(d, k + 1, 0.5))
            if 2 * (tail + step) > alpha:
                break
            k, tail = k + 1, tail + step
        if k < 0:
            continue
        low = sum(math.exp(_log_binomial(d, i, share)) for i in range(k + 1))
        high = sum(math.exp(_log_binomial(d, d - i, share)) for i in range(k + 1))
        power += weight * min(1.0, low + high)
    return power


def detectable_change(
    p_full: float, pairs: int, power: float = 0.8, alpha: float = 0.05
) -> tuple[float | None, float | None]:
    """The success rates, below and above `p_full`, closest to it that `pairs` paired episodes detect with
    the given power (see `mcnemar_power`); None where no rate on that side is detectable."""

    def search(target: float) -> float | None:
        if mcnemar_power(p_full, target, pairs, alpha) < power:
            return None
        near, far = p_full, target  # power < `power` at near, >= at far
        for _ in range(30):
            middle = (near + far) / 2
            if mcnemar_power(p_full, middle, pairs, alpha) >= power:
                far = middle
            else:
                near = middle
        return far

    return search(0.0), search(1.0)

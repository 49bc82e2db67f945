"""Statistics for success rates."""

from __future__ import annotations

import math
from statistics import NormalDist


def wilson_interval(successes: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
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


def clustered_interval(successes: list[int], sizes: list[int]) -> tuple[float, float]:
    """95% interval of a pooled success rate whose episodes come in clusters (repeats of one initial state).

    Repeats of one initial state are not independent trials: a policy that fails a hard state fails most of
    its repeats. The pooled rate's variance is estimated across clusters (the cluster-robust, or ratio
    estimator, variance), its ratio to the binomial variance is the design effect (at least 1), and the
    Wilson interval is taken on the effective number of episodes n / design effect (Kish). With one episode
    per cluster this is Wilson's interval on the episodes, up to the small-sample factor C / (C - 1).
    """
    n, k, clusters = sum(sizes), sum(successes), len(sizes)
    if n == 0:
        return math.nan, math.nan
    p = k / n
    effect = 1.0
    if clusters > 1 and 0 < p < 1:
        spread = sum((s - p * m) ** 2 for s, m in zip(successes, sizes, strict=True))
        effect = max(1.0, clusters / (clusters - 1) * spread / n**2 / (p * (1 - p) / n))
    return wilson_interval(k / effect, n / effect)


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


def _z(probability: float) -> float:
    return NormalDist().inv_cdf(probability)


def sample_size_independent(p_first: float, p_second: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Episodes per arm for a two-sided test of two independent success rates (normal approximation without
    continuity correction, the formula of Fleiss, Levin and Paik and of R's `power.prop.test`):

        n = (z(1-alpha/2) * sqrt(2 p q) + z(power) * sqrt(p1 q1 + p2 q2))^2 / (p1 - p2)^2,  p = (p1 + p2) / 2
    """
    delta = p_second - p_first
    if delta == 0:
        raise ValueError("the two rates are equal: no sample size detects no difference")
    mean = (p_first + p_second) / 2
    spread = _z(1 - alpha / 2) * math.sqrt(2 * mean * (1 - mean)) + _z(power) * math.sqrt(
        p_first * (1 - p_first) + p_second * (1 - p_second)
    )
    return spread**2 / delta**2


def independent_discordance(p_first: float, p_second: float) -> float:
    """Share of discordant pairs when the two policies' outcomes are independent given the rates."""
    return p_first * (1 - p_second) + p_second * (1 - p_first)


def sample_size_paired(
    p_first: float, p_second: float, discordance: float | None = None, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Paired episodes for McNemar's test (Connor 1987's normal approximation):

        n = (z(1-alpha/2) * sqrt(psi) + z(power) * sqrt(psi - delta^2))^2 / delta^2

    with delta = p2 - p1 and psi the expected share of discordant pairs (one policy succeeds, the other
    fails). `discordance` None assumes independent outcomes (`independent_discordance`), the least
    favourable case; policies that fail the same hard episodes have a smaller psi and need fewer pairs.
    """
    delta = p_second - p_first
    if delta == 0:
        raise ValueError("the two rates are equal: no sample size detects no difference")
    psi = independent_discordance(p_first, p_second) if discordance is None else discordance
    if not abs(delta) <= psi <= min(1.0, p_first + p_second, 2 - p_first - p_second):
        raise ValueError(
            f"a discordance of {psi:g} is impossible for rates {p_first:g} and {p_second:g}: it lies between "
            f"|p2 - p1| = {abs(delta):g} and {min(1.0, p_first + p_second, 2 - p_first - p_second):g}"
        )
    spread = _z(1 - alpha / 2) * math.sqrt(psi) + _z(power) * math.sqrt(psi - delta**2)
    return spread**2 / delta**2

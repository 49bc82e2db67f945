"""Error control of the sequential paired test (`qdepth_bench.eval.sequential`), checked by simulation.

For each configuration it simulates paired sequences of two policies (success rates pA and pB, a share psi of
discordant pairs) and prints, for the sequential test: how often it names a policy better (the type-I error
under the null, the power under an alternative), how often it names the worse one, and the mean pairs used;
beside it the fixed-n exact McNemar test at Connor's n for 80% power (at the maximum pairs under the null),
simulated on the same sequences, and Connor's n for a fixed design with the power the sequential test reached.
A null row is marked `ok` when its type-I error is at most alpha plus two simulation standard errors; the last
lines count the null rows within that bound, and the alternatives found with power >= 0.8 whose mean pairs
stay below Connor's n for a fixed design of the same power.

    python benchmarks/sequential_error_control.py [--sequences 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time
from functools import cache

import numpy as np

from qdepth_bench.eval.sequential import SequentialDesign, decide_all
from qdepth_bench.report.stats import mcnemar_exact, sample_size_paired

#: (alpha, max pairs, alternative) x (pA, pB, psi or None for independent outcomes)
DESIGNS = [(0.05, 50, "two-sided"), (0.05, 200, "two-sided"), (0.05, 500, "two-sided"), (0.10, 200, "two-sided")]
DESIGNS += [(0.05, 200, "a-better")]
NULLS = [(0.5, 0.5, 0.05), (0.5, 0.5, 0.2), (0.5, 0.5, 0.5), (0.5, 0.5, 1.0), (0.9, 0.9, 0.18)]
ALTERNATIVES = [(0.6, 0.5, None), (0.7, 0.5, None), (0.7, 0.5, 0.25), (0.9, 0.5, None), (0.5, 0.7, None)]
CHUNK = 2000


def simulate(p_a: float, p_b: float, psi: float, n_seq: int, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """+1 (only A succeeded), -1 (only B), 0 (agree), with P(A only) - P(B only) = pA - pB and their sum psi."""
    only_a, only_b = (psi + p_a - p_b) / 2, (psi - p_a + p_b) / 2
    return rng.choice(np.array([1, -1, 0]), p=[only_a, only_b, 1 - psi], size=(n_seq, n_pairs))


@cache
def _mcnemar_rejects(only_a: int, only_b: int, alpha: float) -> bool:
    return mcnemar_exact(only_a, only_b) < alpha


def fixed_design(outcomes: np.ndarray, n: int, alpha: float) -> tuple[float, float]:
    """The exact McNemar test on the first n pairs: the share that names A better, and B better."""
    a = (outcomes[:, :n] == 1).sum(axis=1)
    b = (outcomes[:, :n] == -1).sum(axis=1)
    rejects = np.array([_mcnemar_rejects(int(x), int(y), alpha) for x, y in zip(a, b, strict=True)])
    return float((rejects & (a > b)).mean()), float((rejects & (b > a)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(f"{args.sequences} simulated sequences per row; SE = simulation standard error")
    header = (
        f"{'alpha':>5} {'max':>4} {'alternative':<10} {'pA':>4} {'pB':>4} {'psi':>5} | {'names A':>7} "
        f"{'names B':>7} {'mean pairs':>10} {'check':<16} | {'fixed n':>7} {'McN A':>6} {'McN B':>6} "
        f"{'n same power':>12}"
    )
    print(header)
    print("-" * len(header))
    all_ok = True
    clear, fewer = 0, 0  # alternatives found with power >= 0.8; of those, mean pairs below the fixed n at that power
    for alpha, max_pairs, alternative in DESIGNS:
        design = SequentialDesign(alpha=alpha, max_pairs=max_pairs, alternative=alternative)
        for p_a, p_b, psi_given in NULLS + ALTERNATIVES:
            psi = psi_given if psi_given is not None else p_a * (1 - p_b) + p_b * (1 - p_a)
            null = p_a == p_b
            n_fixed = max_pairs if null else math.ceil(sample_size_paired(p_b, p_a, psi, alpha=alpha))
            codes, used, fixed = [], [], []
            for start in range(0, args.sequences, CHUNK):
                outcomes = simulate(p_a, p_b, psi, min(CHUNK, args.sequences - start), max(max_pairs, n_fixed), rng)
                code, pairs = decide_all(outcomes, design)
                codes.append(code)
                used.append(pairs)
                fixed.append(fixed_design(outcomes, n_fixed, alpha))
            code, pairs = np.concatenate(codes), np.concatenate(used)
            names_a, names_b = float((code == 1).mean()), float((code == -1).mean())
            weights = [len(c) / args.sequences for c in codes]
            mc_a = sum(w * f[0] for w, f in zip(weights, fixed, strict=True))
            mc_b = sum(w * f[1] for w, f in zip(weights, fixed, strict=True))
            if null:
                rejected = names_a + names_b
                se = math.sqrt(alpha * (1 - alpha) / args.sequences)
                ok = rejected <= alpha + 2 * se
                all_ok &= ok
                check = f"type-I {rejected:.4f} {'ok' if ok else 'FAIL'}"
            same_power = "-"
            if not null and alternative in ("two-sided", "a-better" if p_a > p_b else "b-better"):
                power = names_a if p_a > p_b else names_b
                check = f"power {power:.3f}"
                target = min(power, 0.999)
                if target > alpha:
                    n_same = math.ceil(sample_size_paired(p_b, p_a, psi, alpha=alpha, power=target))
                    same_power = str(n_same)
                    if power >= 0.8:
                        clear += 1
                        fewer += pairs.mean() < n_same
            elif not null:
                check = "not tested"
            print(
                f"{alpha:>5.2f} {max_pairs:>4} {alternative:<10} {p_a:>4.2f} {p_b:>4.2f} {psi:>5.2f} | "
                f"{names_a:>7.4f} {names_b:>7.4f} {pairs.mean():>10.1f} {check:<16} | {n_fixed:>7} {mc_a:>6.3f} "
                f"{mc_b:>6.3f} {same_power:>12}"
            )
    print(f"every null row within alpha + 2 SE: {'yes' if all_ok else 'NO'}")
    print(f"rows with power >= 0.8 using fewer mean pairs than a fixed design of that power: {fewer} of {clear}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

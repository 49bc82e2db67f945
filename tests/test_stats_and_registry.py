"""Wilson intervals, policy option parsing, and `module:Class` policies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.policy import EpisodeContext, ObservationBatch, TaskInfo
from qdepth_bench.registry.base import parse_key_values
from qdepth_bench.registry.policies import make_policy
from qdepth_bench.registry.suites import suite_registry
from qdepth_bench.report.stats import detectable_change, mcnemar_exact, mcnemar_power, wilson_interval


def test_wilson_known_values():
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    low, high = wilson_interval(0, 2)
    assert low == 0.0 and round(high, 4) == 0.6576
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_mcnemar_power_matches_enumerating_every_outcome():
    """The power sums over the binomial number of discordant pairs; here every (only-first, only-second,
    concordant) count of a small design is enumerated instead, from the multinomial directly."""
    p1, p2, n, alpha = 0.7, 0.2, 14, 0.05
    cells = (p1 * (1 - p2), p2 * (1 - p1), 1 - p1 * (1 - p2) - p2 * (1 - p1))
    enumerated = sum(
        math.factorial(n)
        / (math.factorial(b) * math.factorial(c) * math.factorial(n - b - c))
        * cells[0] ** b
        * cells[1] ** c
        * cells[2] ** (n - b - c)
        for b in range(n + 1)
        for c in range(n + 1 - b)
        if b + c and mcnemar_exact(b, c) <= alpha
    )
    assert mcnemar_power(p1, p2, n, alpha) == pytest.approx(enumerated, rel=1e-9)
    assert mcnemar_power(0.4, 0.4, 100) <= 0.05  # no difference: rejects at most alpha (the exact test is conservative)


def test_detectable_change_shrinks_with_more_pairs():
    low_100, high_100 = detectable_change(0.18, 100)
    low_300, high_300 = detectable_change(0.18, 300)
    assert low_100 is not None and low_300 is not None and high_100 is not None and high_300 is not None
    assert low_100 < low_300 < 0.18 < high_300 < high_100
    assert mcnemar_power(0.18, low_300, 300) >= 0.8 > mcnemar_power(0.18, (low_300 + 0.18) / 2, 300)
    assert detectable_change(0.02, 20)[0] is None  # from 2%, no drop can be seen in 20 pairs


def test_policy_args_are_converted_to_config_types():
    policy = make_policy("random", parse_key_values(["chunk_size=3", "scale=0.5", "cameras=main,wrist"]))
    assert policy.config.chunk_size == 3 and policy.config.scale == 0.5
    assert policy.config.cameras == ("main", "wrist")
    assert policy.requirements.cameras == ("main", "wrist")


def test_bad_option_value_is_one_clear_error():
    with pytest.raises(UserError, match="not a valid int"):
        make_policy("random", {"chunk_size": "many"})
    with pytest.raises(UserError, match="not key=value"):
        parse_key_values(["chunk_size"])


def test_module_class_path_builds_a_policy():
    policy = make_policy("qdepth_bench.policies.simple:NoopPolicy", {"chunk_size": "2"})
    assert policy.name == "qdepth_bench.policies.simple:NoopPolicy"
    with pytest.raises(UserError, match="has no 'Nope'"):
        make_policy("qdepth_bench.policies.simple:Nope")


def test_identity_changes_with_config():
    a, b = make_policy("random"), make_policy("random", {"scale": "0.5"})
    assert a.identity().config_hash != b.identity().config_hash
    assert make_policy("random").identity() == a.identity()


def _task() -> TaskInfo:
    return TaskInfo("libero_object", 0, "t", "pick", "panda", (-1.0,) * 7, (1.0,) * 7, (0,) * 6 + (-1,), "x")


def _obs(keys: list[str]) -> ObservationBatch:
    n = len(keys)
    return ObservationBatch(
        keys, {"main": np.zeros((n, 4, 4, 3), np.uint8)}, np.zeros((n, 8), np.float32), ["pick"] * n
    )


def test_random_policy_is_per_episode_deterministic_whatever_the_batching():
    policy = make_policy("random")
    for key, seed in (("a", 1), ("b", 2)):
        policy.reset(EpisodeContext(key, _task(), seed))
    together = policy.act(_obs(["a", "b"]))
    for key, seed in (("a", 1), ("b", 2)):
        policy.reset(EpisodeContext(key, _task(), seed))
    alone = np.concatenate([policy.act(_obs(["b"])), policy.act(_obs(["a"]))])[::-1]
    np.testing.assert_array_equal(together, alone)
    assert together.shape == (2, 5, 7) and set(np.unique(together[:, :, -1])) <= {-1.0, 1.0}
    assert np.all(np.abs(together) <= 1.0)


def test_noop_policy_returns_the_suite_noop():
    policy = make_policy("noop")
    policy.reset(EpisodeContext("a", _task(), 0))
    np.testing.assert_array_equal(policy.act(_obs(["a"]))[0, 0], [0, 0, 0, 0, 0, 0, -1])


def test_libero_alias_and_group_resolve():
    registry = suite_registry()
    assert [s.name for s in registry.resolve("libero_long")] == ["libero_10"]
    assert [s.name for s in registry.resolve("libero")] == [
        "libero_spatial",
        "libero_object",
        "libero_goal",
        "libero_10",
    ]

"""The split of episode time into phases: physics and render inferred from observed and unobserved steps."""

from __future__ import annotations

import pytest

from qdepth_bench.eval.timing import bound, describe, new_episode_timing, split


def timing(**values: float) -> dict[str, float]:
    return {**new_episode_timing(), **values}


def test_render_is_what_observed_steps_cost_beyond_physics():
    # 2 episodes: 3 unobserved steps at 0.02 s, 1 observed at 0.15 s each
    episodes = [timing(reset_s=0.5, blind_steps=3, blind_step_s=0.06, observed_steps=1, observed_step_s=0.15)] * 2
    phases = split(episodes)
    assert phases["physics"] == pytest.approx(2 * (0.06 + 0.02))
    assert phases["render"] == pytest.approx(2 * 0.13)
    assert phases["reset"] == pytest.approx(1.0)
    assert "steps" not in phases
    assert bound(phases) == "start-up"
    assert describe(phases).endswith("(start-up-bound)")


def test_every_step_observed_is_not_split():
    phases = split([timing(observed_steps=10, observed_step_s=1.5, policy_wait_s=4.0)])
    assert phases["steps"] == pytest.approx(1.5) and "render" not in phases
    assert bound(phases) == "policy"

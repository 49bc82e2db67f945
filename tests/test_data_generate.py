"""`qdepth-bench data generate` on the real LIBERO simulator with the scripted expert."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import db_rows, run_cli_subprocess

pytestmark = pytest.mark.slow


def test_generated_demos_are_successes_from_fresh_initial_states(tmp_path):
    from qdepth_bench.datasets.libero_hdf5 import read_episodes
    from qdepth_bench.registry.sims import make_backend
    from qdepth_bench.registry.suites import suite_registry

    out = tmp_path / "demos"
    args = [
        "data",
        "generate",
        "libero_object",
        "--tasks",
        "0",
        "--episodes-per-task",
        "2",
        "--out",
        str(out),
        "--workers",
        "2",
    ]
    result = run_cli_subprocess(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "task 0: 2/2 demonstrations" in result.stdout
    (demo_file,) = out.glob("*_demo.hdf5")
    assert demo_file.name == "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"
    episodes = list(read_episodes(demo_file))
    assert len(episodes) == 2 and all(len(e) > 20 for e in episodes)
    # every demonstration starts away from all 50 evaluation initial states
    backend = make_backend(suite_registry().suites["libero_object"])
    eval_states = np.asarray(backend.suite.get_task_init_states(0))
    for episode in episodes:
        first = episode.sim_states[0]
        n = min(len(first), eval_states.shape[1])
        assert np.abs(eval_states[:, 1:n] - first[1:n]).max(axis=1).min() > 1e-3
    assert not np.allclose(episodes[0].sim_states[0], episodes[1].sim_states[0])
    rows = db_rows(out / "generation.sqlite", "select status from episodes")
    assert sum(status == "success" for (status,) in rows) >= 2
    again = run_cli_subprocess(*args, cwd=tmp_path)
    assert again.returncode == 0 and "attempts to run" not in again.stdout  # nothing left to do

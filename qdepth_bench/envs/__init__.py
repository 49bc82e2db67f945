"""Simulator backends, one module each, imported only when a suite of theirs runs.

A new simulator is one module with a `Backend` subclass plus one line here.
"""

BACKENDS: dict[str, str] = {
    "libero": "qdepth_bench.envs.libero:LiberoBackend",
    "maniskill3": "qdepth_bench.envs.maniskill3:ManiSkill3Backend",
}

#: What to run when a backend's simulator is not installed.
INSTALL_HINTS: dict[str, str] = {
    "libero": "bash scripts/setup.sh (installs robosuite 1.4, mujoco 3.2.3, LIBERO and its assets)",
    "maniskill3": "QDEPTH_EXTRAS=libero,model,simpler bash scripts/setup.sh (mani-skill 3.0.1 and Mesa >= 25 lavapipe)",
    # listed with its grids, not runnable yet
    "simpler_env": "this version has no SimplerEnv backend yet: the Google-robot suite lists its episode grids, "
                   "and the WidowX tasks run with `simpler_widowx` on ManiSkill3",
}

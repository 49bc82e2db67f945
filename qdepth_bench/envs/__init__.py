"""Simulator backends, one module each, imported only when a suite of theirs runs.

A new simulator is one module with a `Backend` subclass plus one line here.
"""

BACKENDS: dict[str, str] = {
    "libero": "qdepth_bench.envs.libero:LiberoBackend",
    "maniskill3": "qdepth_bench.envs.maniskill3:ManiSkill3Backend",
    "simpler_env": "qdepth_bench.envs.simpler_env:SimplerEnvBackend",
}

#: What to run when a backend's simulator is not installed.
INSTALL_HINTS: dict[str, str] = {
    "libero": "bash scripts/setup.sh (installs robosuite 1.4, mujoco 3.2.3, LIBERO and its assets)",
    "maniskill3": "QDEPTH_EXTRAS=libero,model,simpler bash scripts/setup.sh (mani-skill 3.0.1 and Mesa >= 25 lavapipe)",
    "simpler_env": "git clone --recurse-submodules https://github.com/simpler-env/SimplerEnv && .venv/bin/pip install "
                   "-c constraints.txt -e SimplerEnv/ManiSkill2_real2sim -e SimplerEnv (needs a GPU with Vulkan; on "
                   "CPU run simpler_widowx with --backend maniskill3)",
}

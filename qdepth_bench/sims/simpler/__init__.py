"""SIMPLER's tasks and episode grids (`base.py`), its robot conventions (`adapters.py`), and the two
simulators that run them: ManiSkill3 (`maniskill3.py`, WidowX) and SimplerEnv (`simpler_env.py`, every
task). Tables tag their rows with the simulator, since the same suite runs on both."""

from qdepth_bench.core.sim import SimulatorInfo

MANISKILL3 = SimulatorInfo(
    name="maniskill3",
    backend="qdepth_bench.sims.simpler.maniskill3:ManiSkill3Backend",
    install_hint="QDEPTH_EXTRAS=libero,model,simpler bash scripts/setup.sh (mani-skill 3.0.1 and Mesa >= 25 lavapipe)",
    checks="qdepth_bench.sims.simpler.doctor:maniskill3_checks",
    tag_rows=True,
    demo_writer="qdepth_bench.sims.simpler.demo_writer:RldsDemoSink.for_tasks",
    demo_formats=("bridge_rlds", "fractal_rlds"),
)

SIMPLER_ENV = SimulatorInfo(
    name="simpler_env",
    backend="qdepth_bench.sims.simpler.simpler_env:SimplerEnvBackend",
    install_hint="QDEPTH_EXTRAS=libero,model,simpler,simpler_env bash scripts/setup.sh (SimplerEnv in its own "
    "environment .venv-simplerenv; SIMPLERENV_SOURCE=<folder with its archives> where GitHub is out of reach)",
    checks="qdepth_bench.sims.simpler.doctor:simpler_env_checks",
    tag_rows=True,
    worker_environment="qdepth_bench.sims.simpler.environment:worker_environment",
)

"""LIBERO on robosuite/MuJoCo: the backend (`backend.py`), its assets (`assets.py`), its doctor checks
(`doctor.py`) and its demonstration writer (`demo_writer.py`)."""

from qdepth_bench.core.sim import SimulatorInfo

LIBERO = SimulatorInfo(
    name="libero",
    backend="qdepth_bench.sims.libero.backend:LiberoBackend",
    install_hint="bash scripts/setup.sh (installs robosuite 1.4, mujoco 3.2.3, LIBERO and its assets)",
    checks="qdepth_bench.sims.libero.doctor:checks",
    demo_writer="qdepth_bench.sims.libero.demo_writer:LiberoDemoSink.for_tasks",
    demo_formats=("libero_hdf5",),
)

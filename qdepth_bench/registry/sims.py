"""Names -> simulators. A new simulator is one folder under `sims/` with a `SimulatorInfo` plus one line in
`SIMULATORS`; a simulator in another package is one module plus one entry point in that package's metadata
(group `qdepth_bench.simulators`, `name = "module:ATTR"`). Its doctor checks, install hint, requirement
checks and table tag come with it.
"""

from __future__ import annotations

import importlib.metadata
from functools import lru_cache

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.protocol import SuiteSpec
from qdepth_bench.core.sim import Backend, SimulatorInfo, WorkerEnvironment
from qdepth_bench.registry.base import Registry, import_target

#: the entry-point group through which other packages register simulators
ENTRY_POINTS = "qdepth_bench.simulators"
#: name -> "module:attribute" of its `SimulatorInfo`; the module must import nothing of the simulator
SIMULATORS = {
    "libero": "qdepth_bench.sims.libero:LIBERO",
    "maniskill3": "qdepth_bench.sims.simpler:MANISKILL3",
    "simpler_env": "qdepth_bench.sims.simpler:SIMPLER_ENV",
}


@lru_cache(maxsize=1)
def simulators() -> Registry[SimulatorInfo]:
    registry: Registry[SimulatorInfo] = Registry("backend")
    plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)}
    for name, target in {**SIMULATORS, **plugins}.items():
        info = import_target(target)
        if not isinstance(info, SimulatorInfo) or info.name != name:
            raise UserError(
                f"simulator '{name}' ({target}) is not a SimulatorInfo named '{name}'; fix its registration."
            )
        registry.register(name, info)
    return registry


def make_backend(spec: SuiteSpec) -> Backend:
    """The simulator backend for a suite; one clear line when its simulator is not installed."""
    registry = simulators()
    if spec.backend not in registry:
        raise UserError(
            f"suite '{spec.name}' names unknown backend '{spec.backend}'. Known: {', '.join(sorted(registry.names()))}."
        )
    info = registry.get(spec.backend)
    try:
        cls = import_target(info.backend)
    except UserError as exc:
        missing = getattr(exc.__cause__, "name", None) or exc.__cause__ or exc
        raise UserError(
            f"suite '{spec.name}' needs the {spec.backend} simulator, which is not installed "
            f"({missing}). Fix: {info.install_hint}."
        ) from exc
    return cls(spec)


def worker_environment(spec: SuiteSpec) -> WorkerEnvironment | None:
    """The Python environment the suite's env workers must run in; None for this one."""
    registry = simulators()
    if spec.backend not in registry or not registry.get(spec.backend).worker_environment:
        return None
    environment: WorkerEnvironment | None = import_target(registry.get(spec.backend).worker_environment)()
    return environment

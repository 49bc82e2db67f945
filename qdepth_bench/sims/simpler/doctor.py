"""The SIMPLER simulators' doctor checks: mani-skill 3 with Mesa >= 25 lavapipe and the Bridge assets
(WidowX on CPU), and SimplerEnv in its own environment (not on PyPI; the Google-robot tasks need it).

What is reported as working is tried, not read from package metadata: the simulator is imported and one
frame rendered in a subprocess, in the environment its env workers run in (a failing Vulkan driver can
abort the process that tries it)."""

from __future__ import annotations

import os
import subprocess
import sys

from qdepth_bench.core.checks import Check, installed_version
from qdepth_bench.core.errors import UserError
from qdepth_bench.sims.simpler import MANISKILL3, SIMPLER_ENV

#: builds the carrot task through the project's own backend and renders its first observation (a stand-in
#: stage where the assets lack the real one)
_MANISKILL3_PROBE = """
from qdepth_bench.core.policy import PolicyRequirements
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
spec = suite_registry().suites["simpler_widowx"].with_overrides({"stand_ins": True})
backend = make_backend(spec)
env = backend.make_env(0, PolicyRequirements(cameras=("main",)))
obs = env.reset(backend.episodes([0], 1, 0)[0])
print(env.renderer(), "frame", obs.images["main"].shape[1:])
env.close()
"""


#: the carrot cell through the SimplerEnv backend, in SimplerEnv's environment (stand-in stage if it lacks one)
_SIMPLER_ENV_PROBE = """
import simpler_env, mani_skill2_real2sim
from qdepth_bench.core.policy import PolicyRequirements
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry
spec = suite_registry().suites["simpler_widowx"].with_backend("simpler_env").with_overrides({"stand_ins": True})
backend = make_backend(spec)
env = backend.make_env(0, PolicyRequirements(cameras=("main",)))
obs = env.reset(backend.episodes([0], 1, 0)[0])
print(env.renderer(), "frame", obs.images["main"].shape[1:], "stand-in stage" if env.stand_in else "")
env.close()
"""


def _probe(
    code: str, timeout: float = 300, python: str = sys.executable, variables: dict[str, str] | None = None
) -> tuple[bool, str]:
    """Run `code` in a fresh interpreter: (worked, its last line of output or of its error)."""
    try:
        proc = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(variables or {})},
        )
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout:g} s"
    lines = (proc.stdout if proc.returncode == 0 else proc.stderr).strip().splitlines()
    return proc.returncode == 0, (lines[-1] if lines else f"exit code {proc.returncode}")[:300]


def _mesa_vulkan_version() -> str | None:
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "mesa-vulkan-drivers"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def maniskill3_checks() -> list[Check]:
    from qdepth_bench.sims.simpler.maniskill3 import bridge_asset_dir

    version = installed_version("mani-skill")
    checks = [
        Check("mani-skill", version == "3.0.1", version or "not installed", MANISKILL3.install_hint, required=False)
    ]
    mesa = _mesa_vulkan_version()
    mesa_ok = mesa is not None and int(mesa.split(".")[0].split(":")[-1]) >= 25
    checks.append(
        Check(
            "Vulkan (Mesa lavapipe)",
            mesa_ok,
            mesa or "mesa-vulkan-drivers not installed",
            f"{MANISKILL3.install_hint}; it installs mesa-vulkan-drivers from bookworm-backports",
            required=False,
        )
    )
    assets = bridge_asset_dir()
    checks.append(
        Check(
            "ManiSkill3 Bridge assets",
            assets is not None,
            str(assets) if assets else "not found",
            "export MS_ASSET_DIR=<folder with data/tasks/bridge_v2_real2sim_dataset>",
            required=False,
        )
    )
    if version and assets is not None:
        worked, said = _probe(_MANISKILL3_PROBE)
        checks.append(
            Check(
                "ManiSkill3 imports and renders",
                worked,
                said,
                f"{MANISKILL3.install_hint}; then run the probe by hand: python -c 'import mani_skill.envs'",
                required=False,
            )
        )
    return checks


def simpler_env_checks() -> list[Check]:
    from qdepth_bench.sims.simpler.environment import worker_environment

    try:
        environment = worker_environment()
    except UserError as exc:
        return [Check("SimplerEnv", False, "not set up (not on PyPI)", str(exc), required=False)]
    where = environment.label if environment else "this environment"
    python = environment.python if environment else sys.executable
    worked, said = _probe(_SIMPLER_ENV_PROBE, python=python, variables=environment.variables if environment else None)
    return [Check(f"SimplerEnv imports and renders ({where})", worked, said, SIMPLER_ENV.install_hint, required=False)]

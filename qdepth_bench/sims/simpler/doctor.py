"""The SIMPLER simulators' doctor checks: mani-skill 3 with Mesa >= 25 lavapipe and the Bridge assets
(WidowX on CPU), and SimplerEnv (not on PyPI; the Google-robot tasks need it, and a GPU)."""

from __future__ import annotations

import subprocess

from qdepth_bench.core.checks import Check, installed_version
from qdepth_bench.sims.simpler import MANISKILL3, SIMPLER_ENV


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
    return checks


def simpler_env_checks() -> list[Check]:
    version = installed_version("simpler_env")
    return [
        Check(
            "SimplerEnv",
            version is not None,
            version or "not installed (not on PyPI)",
            SIMPLER_ENV.install_hint,
            required=False,
        )
    ]

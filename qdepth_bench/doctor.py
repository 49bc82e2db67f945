"""`qdepth-bench doctor`: what is installed, which renderer works, where the assets are, what is missing.

Each check says what it found and, when something is missing, the one command that fixes it. Renderer
checks run in a subprocess, because a failing GL backend can abort the process that tries it.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .envs import libero_assets
from .errors import UserError

SETUP = "bash scripts/setup.sh"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_checks() -> list[Check]:
    checks = []
    for dist in ("typer", "rich", "sqlite-utils", "pandas", "numpy", "pyyaml"):
        version = _version(dist)
        checks.append(Check(dist, version is not None, version or "not installed", "pip install -e ."))
    torch = _version("torch")
    checks.append(Check("torch", torch is not None and torch.startswith("2.13.0"), torch or "not installed",
                        "pip install torch==2.13.0 (first, before other packages)", required=False))
    wanted = {"robosuite": ("1.4.0",), "mujoco": ("3.",), "bddl": ("1.0.1",), "libero": ("0.1.1",)}
    for dist, prefixes in wanted.items():
        version = _version(dist)
        ok = version is not None and version.startswith(prefixes)
        detail = version or "not installed"
        if version and not ok:
            detail += f" (need {prefixes[0]}x)" if prefixes[0].endswith(".") else f" (need {prefixes[0]})"
        checks.append(Check(dist, ok, detail, SETUP, required=False))
    return checks


_GL_PROBE = "import mujoco; c = mujoco.GLContext(32, 32); c.make_current(); c.free(); print('ok')"


def renderer_checks() -> list[Check]:
    """Try each MuJoCo GL backend headless in a subprocess."""
    if _version("mujoco") is None:
        return [Check("renderer", False, "mujoco not installed", SETUP, required=False)]
    checks = []
    for backend, packages in (("egl", "libegl1 libgl1"), ("osmesa", "libosmesa6")):
        env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
        try:
            proc = subprocess.run([sys.executable, "-c", _GL_PROBE], capture_output=True, text=True, timeout=60,
                                  env=env)
            ok = proc.returncode == 0 and "ok" in proc.stdout
            detail = "renders" if ok else (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]
        except subprocess.TimeoutExpired:
            ok, detail = False, "timed out"
        checks.append(Check(f"renderer {backend}", ok, detail, f"apt-get install {packages}", required=False))
    selected = os.environ.get("MUJOCO_GL", "egl")
    checks.append(Check("MUJOCO_GL", any(c.ok for c in checks if c.name.endswith(selected)), selected,
                        "export MUJOCO_GL=osmesa (if only OSMesa renders)", required=False))
    return checks


def asset_checks() -> list[Check]:
    folder, how = libero_assets.find_assets()
    if folder is None:
        return [Check("LIBERO assets", False, "not found", libero_assets.FIX, required=False)]
    if not folder.is_dir():
        return [Check("LIBERO assets", False, f"{folder} ({how}) does not exist", libero_assets.FIX, required=False)]
    report = libero_assets.verify_assets(folder, libero_assets.read_manifest(libero_assets.manifest_path()))
    if report.ok:
        detail = f"{folder} ({how}): all {report.checked} official files verified"
    else:
        parts = []
        if report.missing:
            parts.append(f"{len(report.missing)} missing (first: {report.missing[0]})")
        if report.corrupt:
            parts.append(f"{len(report.corrupt)} differ from the official files (first: {report.corrupt[0]})")
        detail = f"{folder} ({how}): " + "; ".join(parts)
    return [Check("LIBERO assets", report.ok, detail, "" if report.ok else libero_assets.FIX, required=False)]


def _mesa_vulkan_version() -> str | None:
    try:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "mesa-vulkan-drivers"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def simpler_checks() -> list[Check]:
    """The SIMPLER backends: mani-skill 3 and Mesa >= 25 lavapipe (WidowX on CPU), its Bridge assets, and
    SimplerEnv (not on PyPI; the Google-robot tasks need it, and a GPU)."""
    from .envs import INSTALL_HINTS
    from .envs.maniskill3 import bridge_asset_dir

    extra = "QDEPTH_EXTRAS=libero,model,simpler bash scripts/setup.sh"
    checks = []
    version = _version("mani-skill")
    checks.append(Check("mani-skill", version == "3.0.1", version or "not installed", extra, required=False))
    mesa = _mesa_vulkan_version()
    mesa_ok = mesa is not None and int(mesa.split(".")[0].split(":")[-1]) >= 25
    checks.append(Check("Vulkan (Mesa lavapipe)", mesa_ok, mesa or "mesa-vulkan-drivers not installed",
                        f"{extra} (installs mesa-vulkan-drivers from bookworm-backports)", required=False))
    assets = bridge_asset_dir()
    checks.append(Check("ManiSkill3 Bridge assets", assets is not None, str(assets) if assets else "not found",
                        "export MS_ASSET_DIR=<folder with data/tasks/bridge_v2_real2sim_dataset>", required=False))
    simpler = _version("simpler_env")
    checks.append(Check("SimplerEnv", simpler is not None, simpler or "not installed (not on PyPI)",
                        INSTALL_HINTS["simpler_env"], required=False))
    return checks


def database_check(db: Path | None) -> Check:
    from .store import Store

    try:
        store = Store(db)
    except UserError as exc:
        return Check("database", False, str(exc), "pass --db with a writable path")
    return Check("database", True, f"{store.path} ({len(store.runs())} runs)")


def run_checks(db: Path | None) -> list[Check]:
    return [Check("python", sys.version_info >= (3, 10), sys.version.split()[0], "use Python >= 3.10"),
            *package_checks(), *renderer_checks(), *asset_checks(), *simpler_checks(), database_check(db)]

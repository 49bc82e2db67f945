"""LIBERO's doctor checks: its packages at the pinned versions, a headless MuJoCo renderer, its assets.

Renderer checks run in a subprocess, because a failing GL backend can abort the process that tries it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from qdepth_bench.core.checks import Check, installed_version
from qdepth_bench.core.errors import UserError
from qdepth_bench.sims.libero import LIBERO, pro
from qdepth_bench.sims.libero import assets as libero_assets

_WANTED = {"robosuite": ("1.4.0",), "mujoco": ("3.",), "bddl": ("1.0.1",), "libero": ("0.1.1",)}
_GL_PROBE = "import mujoco; c = mujoco.GLContext(32, 32); c.make_current(); c.free(); print('ok')"


def package_checks() -> list[Check]:
    checks = []
    for dist, prefixes in _WANTED.items():
        version = installed_version(dist)
        ok = version is not None and version.startswith(prefixes)
        detail = version or "not installed"
        if version and not ok:
            detail += f" (need {prefixes[0]}x)" if prefixes[0].endswith(".") else f" (need {prefixes[0]})"
        checks.append(Check(dist, ok, detail, LIBERO.install_hint, required=False))
    return checks


def renderer_checks() -> list[Check]:
    """Try each MuJoCo GL backend headless in a subprocess."""
    if installed_version("mujoco") is None:
        return [Check("renderer", False, "mujoco not installed", LIBERO.install_hint, required=False)]
    checks = []
    for backend, packages in (("egl", "libegl1 libgl1"), ("osmesa", "libosmesa6")):
        env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _GL_PROBE], capture_output=True, text=True, timeout=60, env=env
            )
            ok = proc.returncode == 0 and "ok" in proc.stdout
            detail = "renders" if ok else (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]
        except subprocess.TimeoutExpired:
            ok, detail = False, "timed out"
        checks.append(Check(f"renderer {backend}", ok, detail, f"apt-get install {packages}", required=False))
    selected = os.environ.get("MUJOCO_GL", "egl")
    checks.append(
        Check(
            "MUJOCO_GL",
            any(c.ok for c in checks if c.name.endswith(selected)),
            selected,
            "export MUJOCO_GL=osmesa (if only OSMesa renders)",
            required=False,
        )
    )
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


def pro_checks() -> list[Check]:
    """LIBERO-PRO's task files (only its suites need them): every file of the manifest read and verified."""
    try:
        for rel in pro.manifest():
            pro.verified(rel)
    except UserError as exc:
        return [Check("LIBERO-PRO task files", False, str(exc).split(" Fix:")[0], pro.FIX, required=False)]
    detail = f"{pro.find_package()}: all {len(pro.manifest())} files verified"
    return [Check("LIBERO-PRO task files", True, detail, required=False)]


def checks() -> list[Check]:
    return [*package_checks(), *renderer_checks(), *asset_checks(), *pro_checks()]

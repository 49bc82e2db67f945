"""SimplerEnv's own Python environment, and what its env workers need to render on this machine.

SimplerEnv needs SAPIEN 2.2.2, gymnasium 0.29 and numpy < 2; the main environment has SAPIEN 3
(ManiSkill3), gymnasium 1.x and numpy 2, and both SAPIENs are the package `sapien`. So SimplerEnv lives in
a second virtual environment (`scripts/setup_simplerenv.sh` builds `.venv-simplerenv` beside `.venv`, or
`QDEPTH_SIMPLERENV` names another), and `qdepth-bench run --backend simpler_env` starts its env workers
there. Where SimplerEnv imports in the main environment (a machine set up by hand), workers run here.

`python -m qdepth_bench.sims.simpler.environment configure`, run by setup inside that environment, tries
one SAPIEN render; where the driver lacks a device extension SAPIEN asks for (lavapipe on CPU) it builds
the project's Vulkan layer (`vulkan_layer.py`) and checks the render again with it. What it found is kept
in `qdepth-simplerenv.json` in the environment, and every worker started there enables what it says.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.sim import WorkerEnvironment
from qdepth_bench.sims.simpler import SIMPLER_ENV, vulkan_layer

LOCATION_VARIABLE = "QDEPTH_SIMPLERENV"
CONFIG = "qdepth-simplerenv.json"
#: creates SAPIEN's renderer, which is where a missing device extension fails
_RENDER_PROBE = "import sapien.core as s; r = s.SapienRenderer(offscreen_only=True); print('renderer ok')"


def environment_dir() -> Path:
    """`$QDEPTH_SIMPLERENV`, else `.venv-simplerenv` beside the checkout's package."""
    configured = os.environ.get(LOCATION_VARIABLE)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / ".venv-simplerenv"


def importable_here() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("simpler_env", "mani_skill2_real2sim"))


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return config


def worker_environment() -> WorkerEnvironment | None:
    """Where SimplerEnv's env workers run: None for this Python (SimplerEnv imports here), else its own
    environment; one line naming the setup command when there is neither."""
    if importable_here():
        return None
    folder = environment_dir()
    python = folder / "bin" / "python"
    if not python.is_file():
        raise UserError(f"SimplerEnv is not set up (no {python}): {SIMPLER_ENV.install_hint}.")
    config = read_config(folder)
    layer = config.get("vulkan_layer")
    variables = vulkan_layer.variables(Path(layer)) if layer else {}
    # SAPIEN 2 imports pkg_resources, which warns on every worker start
    variables["PYTHONWARNINGS"] = "ignore:pkg_resources is deprecated as an API:UserWarning"
    return WorkerEnvironment(str(python), variables, f"SimplerEnv's environment {folder}")


def _render(extra: dict[str, str]) -> tuple[bool, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _RENDER_PROBE], capture_output=True, text=True, env={**os.environ, **extra}, timeout=300
    )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def configure(folder: Path) -> dict[str, Any]:
    """Decide, by trying, whether this machine's Vulkan driver needs the layer; write the decision."""
    worked, said = _render({})
    config: dict[str, Any] = {"vulkan_layer": None}
    if not worked:
        if "ErrorExtensionNotPresent" not in said:
            raise SystemExit(f"SAPIEN cannot render here: {said.splitlines()[-1] if said else 'no output'}")
        layer = vulkan_layer.build(folder / "vulkan-layer")
        worked, said = _render(vulkan_layer.variables(layer))
        if not worked:
            raise SystemExit(f"SAPIEN cannot render here, even with the Vulkan layer: {said.splitlines()[-1]}")
        config["vulkan_layer"] = str(layer)
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return config


if __name__ == "__main__":
    if sys.argv[1:] != ["configure"]:
        raise SystemExit("usage: python -m qdepth_bench.sims.simpler.environment configure")
    print(f"SimplerEnv environment: {configure(Path(sys.prefix))}")

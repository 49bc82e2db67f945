"""What a machine is, as far as floating-point results and images go: its fingerprint.

A closed-loop episode turns a 1e-7 difference in one matmul into a different outcome, so two machines
with the same packages can still disagree on some episodes. The fingerprint records what decides those
last bits: the CPU and the instruction set torch and the BLAS dispatch to, thread counts, the variables
that steer them, the renderer of the simulator's own context (added by the env worker, `with_renderer`),
the GPU when one is used, the OS and the package versions. Two sessions with one fingerprint hash ran on
machines that compute alike; `differences` says which fields set two apart.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from qdepth_bench.core.hashing import stable_hash

#: Variables that change which kernels run, how many threads they use, or how frames are rendered.
FINGERPRINT_VARIABLES = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_CBWR",
    "MKL_DEBUG_CPU_TYPE",
    "ATEN_CPU_CAPABILITY",
    "MUJOCO_GL",
    "PYOPENGL_PLATFORM",
    "LP_NUM_THREADS",
    "GALLIUM_DRIVER",
    "VK_ICD_FILENAMES",
    "VK_DRIVER_FILES",
    "VK_INSTANCE_LAYERS",
    "CUDA_VISIBLE_DEVICES",
    "QDEPTH_BENCH_MS3_SIM",
    "QDEPTH_BENCH_MS3_RENDER",
)

#: The field the env worker fills in once its simulator has a rendering context.
RENDERER = "renderer"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> list[dict[str, Any]]:
    """The BLAS/OpenMP libraries loaded now, with the core type they dispatch to (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "version", "architecture", "threading_layer", "num_threads")
    libraries = [{k: lib[k] for k in keep if lib.get(k) is not None} for lib in threadpool_info()]
    return sorted(libraries, key=lambda lib: (str(lib.get("internal_api")), str(lib.get("version"))))


def _torch() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {}
    info: dict[str, Any] = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["gpu_driver"] = _nvidia_driver()
    return info


def _nvidia_driver() -> str:
    """The NVIDIA kernel driver's version line ('' where there is none to read)."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return ""


def machine_fingerprint(package_versions: dict[str, str]) -> dict[str, Any]:
    """This process's machine, as it computes: CPU, instruction sets, BLAS, threads, variables, OS, packages.

    The numpy BLAS is loaded first, so threadpoolctl sees the library every policy and simulator uses.
    """
    import numpy  # noqa: F401 - loads the BLAS threadpoolctl reports

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "torch": _torch(),
        "blas": _blas(),
        "variables": {name: os.environ[name] for name in FINGERPRINT_VARIABLES if name in os.environ},
        "os": f"{platform.system()} {platform.release()}",
        "libc": " ".join(platform.libc_ver()),
        "python": platform.python_version(),
        "packages": dict(sorted(package_versions.items())),
    }


def with_renderer(fingerprint: dict[str, Any], renderer: str) -> dict[str, Any]:
    """The fingerprint with the renderer of the simulator's own context (GL or Vulkan device string)."""
    return {**fingerprint, RENDERER: renderer}


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    return stable_hash(fingerprint, 12)


def machine_hash(fingerprint: dict[str, Any]) -> str:
    """The hash without the renderer: known before any env is built, so a resume can compare at once."""
    return fingerprint_hash({k: v for k, v in fingerprint.items() if k != RENDERER})


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list):
        flat = {}
        for i, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}[{i}]"))
        return flat
    return {prefix: value}


def differences(first: dict[str, Any], second: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, first value, second value) for every field the two fingerprints do not share (None: absent)."""
    a, b = _flatten(first), _flatten(second)
    return [(key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]

"""Build and enable the project's Vulkan layer (`vulkan/drop_missing_extensions.c`) for SAPIEN 2 on CPU.

SAPIEN 2.2.2 asks for GPU-interop device extensions that Mesa's lavapipe lacks on kernels without
udmabuf, and its device creation then fails. The layer drops, at device creation, every requested device
extension the driver does not offer. A preload wrapper would not do: SAPIEN resolves `vkCreateDevice`
through vulkan.hpp's dynamic dispatch (dlopen + dlsym), which only a layer sits in front of.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from pathlib import Path

LAYER_NAME = "VK_LAYER_QDEPTH_drop_missing_extensions"
LIBRARY = "libqdepth_vk_drop_extensions.so"
MANIFEST = "qdepth_vk_drop_extensions.json"
SOURCE = Path(__file__).with_name("vulkan") / "drop_missing_extensions.c"
#: the device extensions SAPIEN 2 may request that a CPU driver may lack; the manifest must declare them,
#: or the loader rejects the request before the layer runs
DECLARED_EXTENSIONS = ("VK_KHR_external_memory_fd", "VK_KHR_external_semaphore_fd", "VK_KHR_external_fence_fd")


def build(folder: Path) -> Path:
    """Compile the layer into `folder` and write its manifest there; returns the folder. Needs a C compiler
    and the Vulkan headers (Debian: gcc, libvulkan-dev)."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None or not Path("/usr/include/vulkan/vk_layer.h").is_file():
        raise RuntimeError(
            "building the Vulkan layer needs a C compiler and the Vulkan headers: apt-get install gcc libvulkan-dev"
        )
    folder.mkdir(parents=True, exist_ok=True)
    command = [compiler, "-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-o", str(folder / LIBRARY), str(SOURCE)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    manifest = {
        "file_format_version": "1.1.2",
        "layer": {
            "name": LAYER_NAME,
            "type": "GLOBAL",
            "library_path": f"./{LIBRARY}",
            "api_version": "1.3.0",
            "implementation_version": "1",
            "description": "qdepth-bench: drop requested device extensions the driver lacks (SAPIEN 2 on lavapipe)",
            "device_extensions": [{"name": name, "spec_version": "1"} for name in DECLARED_EXTENSIONS],
        },
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def variables(folder: Path) -> dict[str, str]:
    """The environment that enables the layer in `folder` for a process (and keeps layers already asked for)."""
    layers = [x for x in os.environ.get("VK_INSTANCE_LAYERS", "").split(":") if x and x != LAYER_NAME]
    paths = [x for x in os.environ.get("VK_LAYER_PATH", "").split(":") if x and x != str(folder)]
    return {"VK_LAYER_PATH": ":".join([str(folder), *paths]), "VK_INSTANCE_LAYERS": ":".join([LAYER_NAME, *layers])}


def report() -> tuple[str, str] | None:
    """(the Vulkan device, the device extensions dropped) as the layer saw them in this process; None when
    the layer is not loaded here."""
    folder = os.environ.get("VK_LAYER_PATH", "").split(":")[0]
    if LAYER_NAME not in os.environ.get("VK_INSTANCE_LAYERS", "") or not folder:
        return None
    try:
        library = ctypes.CDLL(str(Path(folder) / LIBRARY), mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return None
    values = []
    for function in (library.qdepth_device_name, library.qdepth_dropped_extensions):
        function.restype = ctypes.c_char_p
        values.append((function() or b"").decode())
    return values[0], values[1]

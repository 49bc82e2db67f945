"""The built wheel works outside the checkout: its content folders (suites, policies and their shipped
checkpoints, the paper's tables) travel inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parents[1]


def test_wheel_installed_in_a_fresh_venv_runs_outside_the_checkout(tmp_path):
    source, wheels = tmp_path / "source", tmp_path / "wheels"  # built from a copy: the checkout stays clean
    shutil.copytree(CHECKOUT / "qdepth_bench", source / "qdepth_bench", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, source / name)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("qdepth_bench-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies come from the test's own environment, appended after the fresh venv's packages (a
    # plain path line: the editable install's finder there is never activated)
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--ignore-installed",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QDEPTH_BENCH_CONTENT")}
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(venv / "bin" / "qdepth-bench"), *args],
            cwd=outside,
            env={**env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=300,
        )

    where = subprocess.run(
        [str(python), "-c", "import qdepth_bench; print(qdepth_bench.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(site), where
    suites = run("suites")
    assert suites.returncode == 0 and "libero_object" in suites.stdout and "simpler_widowx" in suites.stdout, (
        suites.stderr
    )
    policies = run("policies")
    assert policies.returncode == 0 and "qdepth" in policies.stdout and "scripted-widowx" in policies.stdout
    table = run("table", "libero", "--reference", "-f", "csv", "--db", str(outside / "r.sqlite"))
    assert table.returncode == 0 and "QDepth-VLA" in table.stdout, table.stderr
    shipped = Path(site) / "qdepth_bench" / "content" / "policies" / "checkpoints" / "qdepth-tiny-libero-object"
    assert (shipped / "model.safetensors").is_file() and (shipped / "config.json").is_file()

"""`qdepth-bench doctor`: what is installed, which renderer works, where the assets are, what is missing.

The project's own packages and the database are checked here; each registered simulator brings its own
checks (`SimulatorInfo.checks`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from qdepth_bench import __version__
from qdepth_bench.cli.common import DbOption, app, console
from qdepth_bench.core.checks import Check, installed_version
from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.base import import_target
from qdepth_bench.registry.sims import simulators


def package_checks() -> list[Check]:
    checks = []
    for dist in ("typer", "rich", "sqlite-utils", "pandas", "numpy", "pyyaml"):
        version = installed_version(dist)
        checks.append(Check(dist, version is not None, version or "not installed", "pip install -e ."))
    torch = installed_version("torch")
    checks.append(
        Check(
            "torch",
            torch is not None and torch.startswith("2.13.0"),
            torch or "not installed",
            "pip install torch==2.13.0 (first, before other packages)",
            required=False,
        )
    )
    return checks


def simulator_checks() -> list[Check]:
    """Every registered simulator's own checks, in registration order."""
    return [check for info in simulators().values() if info.checks for check in import_target(info.checks)()]


def database_check(db: Path | None) -> Check:
    from qdepth_bench.results.store import Store

    try:
        store = Store(db)
    except UserError as exc:
        return Check("database", False, str(exc), "pass --db with a writable path")
    return Check("database", True, f"{store.path} ({len(store.runs())} runs)")


def run_checks(db: Path | None) -> list[Check]:
    return [
        Check("python", sys.version_info >= (3, 10), sys.version.split()[0], "use Python >= 3.10"),
        *package_checks(),
        *simulator_checks(),
        database_check(db),
    ]


@app.command()
def doctor(db: DbOption = None) -> None:
    """What is installed, which renderer works, where assets are, and the command that fixes what is missing."""
    checks = run_checks(db)
    out = Table("check", "status", "detail", "fix", title=f"qdepth-bench {__version__} doctor")
    for check in checks:
        out.add_row(
            check.name,
            "[green]ok[/green]" if check.ok else "[red]missing[/red]",
            check.detail,
            "" if check.ok else check.fix,
        )
    console.print(out)
    if not all(c.ok for c in checks if c.required):
        raise typer.Exit(1)

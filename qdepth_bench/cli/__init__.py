"""The `qdepth-bench` command line: one module per command group, each command parsing its options,
calling one library function and printing. `common.py` holds what they share."""

from qdepth_bench.cli import ablation, catalog, data, doctor, report, run, runs, serve, train  # noqa: F401  (register commands)
from qdepth_bench.cli.common import app


def main() -> None:
    """Console entry point."""
    app()

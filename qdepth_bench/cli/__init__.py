"""The `qdepth-bench` command line: one module per command group, each command parsing its options,
calling one library function and printing. `common.py` holds what they share."""

from qdepth_bench.cli import (  # noqa: F401  (register commands)
    ablation,
    catalog,
    compare,
    data,
    doctor,
    power,
    realsim,
    report,
    robustness,
    run,
    runs,
    serve,
    train,
    verify,
)
from qdepth_bench.cli.common import app

__all__ = ["app"]

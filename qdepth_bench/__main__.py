"""`python -m qdepth_bench` is the same as the `qdepth-bench` command."""

from qdepth_bench.cli import main

main()

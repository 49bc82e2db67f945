"""`python -m qdepth_bench` is the same as the `qdepth-bench` command."""

from qdepth_bench.console import main

main()

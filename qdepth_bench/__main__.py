"""`python -m qdepth_bench` is the same as the `qdepth-bench` command."""

from .cli import main

main()

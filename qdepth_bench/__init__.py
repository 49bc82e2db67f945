"""qdepth-bench: a benchmark harness and leaderboard CLI for vision-language-action robot policies."""

__version__ = "0.1.0"

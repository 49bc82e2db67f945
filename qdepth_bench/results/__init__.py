"""Where results live: the SQLite store of runs and episodes, and the paper's published tables."""

"""Turning episodes and reference numbers into tables: statistics, table building, renderers."""

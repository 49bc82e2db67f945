"""SIMPLER episode grids (docs/protocols.md, "SIMPLER visual matching") expanded to one row per episode.

A task's `grid` in `content/suites/simpler.yaml` is a product of axes; each axis is one of
  {values: [...]}                     listed values (URDF variants, orientations, robot poses, env ids)
  {linspace: [low, high, n]}          n evenly spaced values, ends included (object x / y positions)
  {range: n}                          0 .. n-1 (episode ids)
Axes may be zipped (`zip: [a, b]`: drawer poses with their overlay images). Cells are ordered by the axes as
listed, so cell i is the same episode on every machine. The "prepackaged" mode instead takes `repeats`
episodes per seed from the env's own RNG (SimplerEnv's default); the mode and seeds are recorded per episode.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from qdepth_bench.core.errors import UserError


def _axis_values(name: str, axis: Any) -> list[Any]:
    if isinstance(axis, dict) and "values" in axis:
        return list(axis["values"])
    if isinstance(axis, dict) and "linspace" in axis:
        low, high, n = axis["linspace"]
        return [round(float(v), 6) for v in np.linspace(float(low), float(high), int(n))]
    if isinstance(axis, dict) and "range" in axis:
        return list(range(int(axis["range"])))
    raise UserError(f"grid axis '{name}' must be {{values: [...]}}, {{linspace: [lo, hi, n]}} or {{range: n}}.")


def expand_grid(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """All cells of a grid, in order; zipped axes advance together."""
    grid = dict(grid)
    zipped = [tuple(group) for group in grid.pop("zip", [])]
    in_zip = {name for group in zipped for name in group}
    axes: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]] = []
    for group in zipped:
        columns = [_axis_values(name, grid[name]) for name in group]
        if len({len(c) for c in columns}) != 1:
            raise UserError(f"zipped grid axes {group} must have the same length.")
        axes.append((group, list(zip(*columns, strict=True))))
    for name, axis in grid.items():
        if name not in in_zip:
            axes.append(((name,), [(v,) for v in _axis_values(name, axis)]))
    cells = []
    for combination in itertools.product(*(values for _, values in axes)):
        cell: dict[str, Any] = {}
        for (names, _), values in zip(axes, combination, strict=True):
            cell.update(dict(zip(names, values, strict=True)))
        cells.append(cell)
    return cells


def task_cells(task: dict[str, Any], mode: str = "grid", repeats: int = 1) -> list[dict[str, Any]]:
    """The episodes of one task: its grid cells, or `repeats` prepackaged episodes per grid cell's seed."""
    cells = expand_grid(task["grid"])
    if mode == "grid":
        if repeats != 1:
            raise UserError(
                "grid repeats apply to the prepackaged grid mode only (each grid cell is one "
                "fixed episode); add --grid-mode prepackaged or drop --grid-repeats."
            )
        return [{"mode": "grid", **cell} for cell in cells]
    if mode == "prepackaged":
        return [{"mode": "prepackaged", "seed": i} for i in range(len(cells) * repeats)]
    raise UserError(f"grid mode must be grid or prepackaged (got {mode!r}).")


def grid_episode_counts(protocol: dict[str, Any]) -> list[int]:
    """Episodes of each task of a gridded suite under its protocol's grid mode and repeats."""
    mode, repeats = protocol.get("grid_mode", "grid"), int(protocol.get("grid_repeats", 1))
    if repeats < 1:
        raise UserError(f"grid repeats must be at least 1 (got {repeats}).")
    return [len(task_cells(task, mode, repeats)) for task in protocol["tasks"]]

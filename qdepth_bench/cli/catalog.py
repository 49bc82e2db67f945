"""`qdepth-bench policies` and `suites`: what the registries hold."""

from __future__ import annotations

from rich.table import Table

from qdepth_bench.cli.common import app, console
from qdepth_bench.core.episode_grid import task_cells
from qdepth_bench.registry.policies import policy_registry
from qdepth_bench.registry.suites import suite_registry


@app.command()
def policies() -> None:
    """List the registered policies."""
    out = Table("name", "class", "description", title="policies")
    for entry in sorted(policy_registry().values(), key=lambda e: e.name):
        out.add_row(entry.name, entry.target, entry.description)
    console.print(out)


@app.command()
def suites() -> None:
    """List the registered suites with their protocol settings and episode counts."""
    registry = suite_registry()
    out = Table("suite", "backend", "tasks", "episodes/task", "episodes", "max steps", "aliases", title="suites")
    for spec in registry.suites.values():
        counts = spec.task_episode_counts()
        steps = sorted({int(t["max_steps"]) for t in spec.extra.get("tasks", [])}) or [int(spec.protocol["max_steps"])]
        out.add_row(
            spec.name,
            " or ".join(spec.backend_choices),
            str(spec.n_tasks),
            _span(counts),
            str(sum(counts)),
            _span(steps),
            ", ".join(spec.aliases),
        )
    console.print(out)
    gridded = [spec for spec in registry.suites.values() if spec.extra.get("tasks")]
    if gridded:
        tasks = Table("suite", "task", "episodes", "max steps", "env ids", title="tasks with episode grids")
        for spec in gridded:
            for task in spec.extra["tasks"]:
                cells = task_cells(
                    task, spec.protocol.get("grid_mode", "grid"), int(spec.protocol.get("grid_repeats", 1))
                )
                per_cell = sorted({c["env_id"] for c in cells if "env_id" in c})
                ids = {k: ", ".join(per_cell) if v == "per_cell" else v for k, v in task["env_ids"].items()}
                tasks.add_row(
                    spec.name,
                    task["key"],
                    str(len(cells)),
                    str(task["max_steps"]),
                    "; ".join(f"{k}: {v}" for k, v in ids.items()),
                )
        console.print(tasks)
    for group, members in registry.groups.items():
        console.print(f"group [bold]{group}[/bold] = {', '.join(members)}")


def _span(values: list[int]) -> str:
    """`24` when every task has the same number, `108-300` when they differ."""
    return str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}"

"""Every report view as one shape, a `Grid`, so that each output format is written once.

Comparison tables, leaderboards and ablations become grids here: a title, aligned columns, rows of
cells (a value, its interval and n, and what part of the protocol it covers), footnotes, and the flat
records the CSV form carries. Published cells print as the paper prints them (one decimal); ours add
n and the 95% Wilson interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from qdepth_bench.report.ablation import AblationRow, AblationView, ablation_records
from qdepth_bench.report.cells import Cell
from qdepth_bench.report.depth import Association, DepthRunView
from qdepth_bench.report.robustness import RobustnessView, robustness_records
from qdepth_bench.report.stats import wilson_interval
from qdepth_bench.report.tables import TableView, mark_notes, method_label, table_records

CHECK, CROSS = "✓", "✗"


@dataclass(frozen=True)
class GridColumn:
    label: str
    align: str = "right"  # "left", "right" or "center"


@dataclass
class GridCell:
    value: str
    #: the 95% interval, '[low, high]' ('' for published cells)
    interval: str = ""
    #: n and errors, 'n=50 err=1'
    counts: str = ""
    #: what part of the protocol the cell covers and whether its run finished ('' for a whole one)
    marks: str = ""
    #: why the cell is flagged, said in formats with tooltips
    why: str = ""

    @property
    def detail(self) -> str:
        """Interval, n, errors and marks as one line of small print."""
        detail = " ".join(p for p in (self.interval, self.counts) if p)
        return f"{detail} · {self.marks}".strip(" ·") if self.marks else detail


@dataclass
class GridRow:
    kind: str  # "published" or "ours"
    cells: list[GridCell]


@dataclass
class Grid:
    id: str
    title: str
    columns: list[GridColumn]
    rows: list[GridRow]
    notes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)


def _value(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    if cell.rate is None:
        return f"err {cell.errors}" if cell.errors else "–"
    return f"{cell.rate:.1f}"


def _why(cell: Cell) -> str:
    return "; ".join(
        (
            [f"covers {cell.coverage} of the protocol: not a suite score, not averaged, not ranked"]
            if cell.coverage
            else []
        )
        + (["from a run that did not finish"] if cell.unfinished else [])
    )


def rate_cell(cell: Cell | None, ours: bool) -> GridCell:
    """A success-rate cell; ours carry interval, n, errors and marks."""
    if cell is None or not ours:
        return GridCell(_value(cell))
    interval = f"[{cell.ci_low:.1f}, {cell.ci_high:.1f}]" if cell.ci_low is not None else ""
    counts = (f"n={cell.n}" if cell.ci_low is not None else "") + (
        f" err={cell.errors}" if cell.errors and cell.rate is not None else ""
    )
    return GridCell(_value(cell), interval, counts.strip(), cell.marks, _why(cell))


def table_grid(view: TableView) -> Grid:
    ranked = any(r.rank is not None for r in view.rows)
    columns = ([GridColumn("Rank")] if ranked else []) + [
        GridColumn(n, "left") for n in ("Method", "Setting", "Source")
    ]
    columns += [GridColumn(c.label) for c in view.columns]
    rows = []
    for row in view.rows:
        ours = row.kind == "ours"
        text = [
            *([("–" if row.rank is None else str(row.rank))] if ranked else []),
            method_label(row),
            row.setting,
            "ours" if ours else "published",
        ]
        rows.append(
            GridRow(
                row.kind, [GridCell(t) for t in text] + [rate_cell(row.cells.get(c.label), ours) for c in view.columns]
            )
        )
    return Grid(view.id, view.title, columns, rows, mark_notes(view.rows), table_records([view]))


def _ablation_cells(view: AblationView, row: AblationRow) -> list[GridCell]:
    ours = view.source == "ours"
    marks = [GridCell(CROSS if c in row.variant.removes else CHECK) for c in view.spec.components]
    rates = [_marked(rate_cell(row.cells.get(label), ours)) for label in view.columns]
    average = rate_cell(row.average, ours)
    average = _marked(
        GridCell(
            "–" if row.average.rate is None else average.value,
            average.interval,
            average.counts,
            average.marks,
            average.why,
        )
    )
    delta = "–" if row.delta is None or row.variant.policy == view.spec.full else f"{row.delta:+.1f}"
    test = _paired_text(row.p_value, row.discordant)
    cells = [GridCell(row.variant.label), *marks, *rates, average, GridCell(delta), GridCell(test)]
    cells += [GridCell(row.sequential_text)] if view.sequential else []
    if view.has_depth:
        cells.append(_percent(row.depth_accuracy))
    return [*cells, _seeds_cell(row)] if ours else cells


def _paired_text(p_value: float | None, discordant: tuple[int, int] | None) -> str:
    """A paired test as printed: 'p=0.004 (18/4)' (only-full / only-variant successes), 'p<0.001 (1/20)'
    below what three decimals show, '' for none."""
    if p_value is None or discordant is None:
        return ""
    shown = "p<0.001" if p_value < 0.0005 else f"p={p_value:.3f}"
    return f"{shown} ({discordant[0]}/{discordant[1]})"


def _seeds_cell(row: AblationRow) -> GridCell:
    """Each training seed's average, then their mean ± standard deviation when there are several."""
    rates = " / ".join("–" if s.average.rate is None else f"{s.average.rate:.1f}" for s in row.seeds)
    spread = "" if row.seed_spread is None else f"mean {row.average.rate or 0:.1f} ± {row.seed_spread:.1f}"
    shown = f"{len(row.seeds)}/{row.planned_seeds}" if len(row.seeds) < row.planned_seeds else str(len(row.seeds))
    return GridCell(rates, counts=f"{shown} seed{'s' if row.planned_seeds != 1 else ''}", marks=spread)


def _marked(cell: GridCell) -> GridCell:
    """An ablation cell: the value with its coverage marks in brackets (and ours with interval and n)."""
    return GridCell(cell.value + (f" ({cell.marks})" if cell.marks else ""), cell.interval, cell.counts, why=cell.why)


def ablation_grid(view: AblationView) -> Grid:
    ours = view.source == "ours"
    header = ["Model", *view.spec.components, *view.columns, "Avg", "Δ vs full", "paired test"]
    header += ["sequential"] if view.sequential else []
    header += ["depth acc. %"] if view.has_depth else []
    header += ["training seeds"] if ours else []
    columns = [GridColumn(h, "left" if i == 0 else "center") for i, h in enumerate(header)]
    rows = [GridRow(view.source, _ablation_cells(view, row)) for row in view.rows]
    notes = (
        [
            "paired test: exact McNemar against the full model on the same episodes (only-full / only-variant "
            "successes), each training seed against the full model's same seed, the seeds' pairs pooled; "
            "Δ vs full over the same seeds",
            *view.detectable(),
            *view.notes,
            *(
                [
                    "depth acc.: mean depth-token accuracy of the episodes scored by `run --depth-metrics` (chance "
                    "1/256; `qdepth-bench depth-report RUN` for its controls)"
                ]
                if view.has_depth
                else []
            ),
        ]
        if ours
        else []
    )
    return Grid(f"{view.spec.id}-{view.source}", view.title, columns, rows, notes, ablation_records([view]))


def seed_grid(view: AblationView) -> Grid:
    """One row per (variant, training seed): its average with interval, and its own paired test."""
    columns = [
        GridColumn("Model", "left"),
        GridColumn("seed"),
        GridColumn("Avg"),
        GridColumn("paired test (same seed)"),
    ]
    rows = []
    for row in view.rows:
        for result in row.seeds:
            test = _paired_text(result.p_value, result.discordant)
            rows.append(
                GridRow(
                    "ours",
                    [
                        GridCell(row.variant.label),
                        GridCell(str(result.seed)),
                        rate_cell(result.average, True),
                        GridCell(test),
                    ],
                )
            )
    return Grid(f"{view.spec.id}-seeds", f"{view.spec.id}: each training seed", columns, rows)


def _percent(value: float | None, low: float | None = None, high: float | None = None) -> GridCell:
    if value is None:
        return GridCell("–")
    interval = f"[{100 * low:.1f}, {100 * high:.1f}]" if low is not None and high is not None else ""
    return GridCell(f"{100 * value:.1f}", interval)


def _half(successes: int, n: int) -> GridCell:
    if not n:
        return GridCell("–")
    low, high = wilson_interval(successes, n)
    return GridCell(f"{100 * successes / n:.1f}", f"[{100 * low:.1f}, {100 * high:.1f}]", f"n={n}")


def _association(association: Association) -> GridCell:
    if association.r is None:
        return GridCell("–", counts=association.why)
    shown = "p<0.001" if (association.p_value or 0) < 0.0005 else f"p={association.p_value:.3f}"
    return GridCell(f"{association.r:+.2f}", f"[{association.low:+.2f}, {association.high:+.2f}]", shown)


def _number(value: float | None, digits: int = 3) -> GridCell:
    return GridCell("–" if value is None else f"{value:.{digits}f}")


def depth_grid(view: DepthRunView) -> Grid:
    """One row per task: depth-token accuracy with its interval beside chance and the no-depth-expert control,
    top-5, cross-entropy, abs-rel and its VQ-VAE floor, success of the better and worse predicted halves, and
    the association of accuracy with success."""
    header = [
        "Task",
        "episodes",
        "success %",
        "token acc. %",
        "top-5 %",
        "cross-entropy",
        "majority code %",
        "layout %",
        "pred. mode %",
        "abs-rel",
        "VQ-VAE floor",
        "success, top half %",
        "success, bottom half %",
        "r (acc., success)",
    ]
    columns = [GridColumn(h, "left" if i == 0 else "right") for i, h in enumerate(header)]
    rows, records = [], []
    for task in view.tasks:
        cells = [
            GridCell(f"{task.task_id}: {task.task_name}"),
            GridCell(str(task.episodes)),
            _half(task.successes, task.episodes),
            _percent(task.token_accuracy, task.token_low, task.token_high),
            _percent(task.top5_accuracy),
            _number(task.cross_entropy, 2),
            _percent(task.majority_rate),
            _percent(task.layout_rate),
            _percent(task.predicted_mode_share),
            _number(task.abs_rel),
            _number(task.abs_rel_floor),
            _half(*task.top_half),
            _half(*task.bottom_half),
            _association(task.association),
        ]
        rows.append(GridRow("ours", cells))
        record = {"run_id": view.run_id, "policy": view.policy, "suite": view.suite, **asdict(task)}
        record.update(association_r=task.association.r, association_p=task.association.p_value)
        records.append({k: v for k, v in record.items() if k != "association"})
    return Grid(f"depth-{view.run_id}", view.title, columns, rows, view.notes(), records)


def robustness_grid(view: RobustnessView) -> Grid:
    """One row per (policy, dimension, level): success with interval and n, the twins' rate on the same
    episodes, the drop, and the paired test."""
    header = ["Policy", "dimension", "level", "strength", "success %", "twins %", "drop (pp)", "paired test"]
    columns = [GridColumn(h, "left" if i < 2 else "right") for i, h in enumerate(header)]
    rows = []
    for row in view.rows:
        p = row.perturbation
        twin = "–" if row.twin_rate is None else f"{row.twin_rate:.1f}"
        drop = "–" if row.drop is None else f"{row.drop:+.1f}"
        cells = [
            GridCell(row.policy),
            GridCell(p.dimension),
            GridCell(str(p.level)),
            GridCell(f"{p.strength:g}", counts=p.unit),
            rate_cell(row.cell, True),
            GridCell(twin, counts=f"pairs={row.pairs}" if row.pairs else ""),
            GridCell(drop),
            GridCell(_paired_text(row.p_value, row.discordant)),
        ]
        rows.append(GridRow("ours", cells))
    notes = [
        "twins: the same policy on the unperturbed protocol, same task, initial state and seed; twins % and the drop "
        "are over the pairs both recorded (errors left out)",
        "paired test: exact McNemar (twin-only / perturbed-only successes)",
        *view.notes,
    ]
    return Grid(f"robustness-{view.suite}", view.title, columns, rows, notes, robustness_records(view))


def grids(views: list[Any]) -> list[Grid]:
    """Any report's views as grids."""
    out = []
    for view in views:
        if isinstance(view, TableView):
            out.append(table_grid(view))
            continue
        if isinstance(view, DepthRunView):
            out.append(depth_grid(view))
            continue
        if isinstance(view, RobustnessView):
            out.append(robustness_grid(view))
            continue
        out.append(ablation_grid(view))
        if view.source == "ours" and any(len(r.seeds) > 1 for r in view.rows):
            out.append(seed_grid(view))
    return out

"""Renderers for table views: rich (terminal), Markdown, LaTeX and CSV.

Published cells print as the paper prints them (one decimal); our cells add n and the 95% Wilson interval,
and a row measured under a non-standard protocol is marked with a dagger so it is never mistaken for a
comparable number.
"""

from __future__ import annotations

import csv
import io

from rich.table import Table

from .tables import Cell, Row, TableView, table_records

FORMATS = ("rich", "markdown", "csv", "latex")
NONSTANDARD_NOTE = "† measured under a non-standard protocol (not comparable with published numbers)"


def _value(cell: Cell | None, row: Row) -> str:
    if cell is None:
        return "–"
    if cell.rate is None:
        return f"err {cell.errors}" if cell.errors else "–"
    return f"{cell.rate:.1f}"


def _detail(cell: Cell | None, row: Row) -> str:
    """n, interval and errors of one of our cells ('' for published cells and averages)."""
    if cell is None or row.kind != "ours" or cell.ci_low is None:
        return ""
    detail = f"[{cell.ci_low:.1f}, {cell.ci_high:.1f}] n={cell.n}"
    return detail + (f" err={cell.errors}" if cell.errors else "")


def _cells(view: TableView, row: Row, detail_format: str) -> list[str]:
    """Each column's text for one row: the value, then n and the interval formatted by `detail_format`."""
    texts = []
    for column in view.columns:
        cell = row.cells.get(column.label)
        detail = _detail(cell, row)
        texts.append(_value(cell, row) + (detail_format.format(detail) if detail else ""))
    return texts


def _method(row: Row) -> str:
    return row.method + ("" if row.standard_protocol else " †")


def _source(row: Row) -> str:
    return "published" if row.kind == "published" else "ours"


def to_rich(views: list[TableView]) -> list[Table]:
    tables = []
    for view in views:
        table = Table(title=view.title, title_justify="left")
        table.add_column("Method")
        table.add_column("Setting")
        table.add_column("Source")
        for column in view.columns:
            table.add_column(column.label, justify="right")
        for row in view.rows:
            style = "dim" if row.kind == "published" else None
            table.add_row(_method(row), row.setting, _source(row), *_cells(view, row, "\n[dim]{}[/dim]"), style=style)
        if any(not r.standard_protocol for r in view.rows):
            table.caption = NONSTANDARD_NOTE
        tables.append(table)
    return tables


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(views: list[TableView]) -> str:
    out = []
    for view in views:
        header = ["Method", "Setting", "Source", *[c.label for c in view.columns]]
        lines = [f"### {view.title}", "", "| " + " | ".join(map(_md_escape, header)) + " |",
                 "|" + "|".join(["---"] * 3 + ["---:"] * len(view.columns)) + "|"]
        for row in view.rows:
            cells = [_method(row), row.setting, _source(row), *_cells(view, row, " {}")]
            lines.append("| " + " | ".join(map(_md_escape, cells)) + " |")
        if any(not r.standard_protocol for r in view.rows):
            lines += ["", NONSTANDARD_NOTE]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_LATEX_SPECIALS = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                   "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                   "π": r"$\pi$", "†": r"$^\dagger$", "–": "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def to_latex(views: list[TableView]) -> str:
    out = []
    for view in views:
        spec = "lll" + "r" * len(view.columns)
        lines = [f"% {latex_escape(view.title)}", r"\begin{tabular}{" + spec + "}", r"\toprule",
                 " & ".join(["Method", "Setting", "Source", *[latex_escape(c.label) for c in view.columns]])
                 + r" \\", r"\midrule"]
        for row in view.rows:
            cells = []
            for column in view.columns:
                cell = row.cells.get(column.label)
                value = latex_escape(_value(cell, row))
                if row.kind == "ours" and cell is not None and cell.ci_low is not None:
                    value += rf"\,{{\scriptsize[{cell.ci_low:.1f}, {cell.ci_high:.1f}]}}"
                cells.append(value)
            lines.append(" & ".join([latex_escape(_method(row)), latex_escape(row.setting), _source(row), *cells])
                         + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def to_csv(views: list[TableView]) -> str:
    records = table_records(views)
    buffer = io.StringIO()
    fields = list(records[0]) if records else ["table", "kind", "method", "column", "success_rate"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()

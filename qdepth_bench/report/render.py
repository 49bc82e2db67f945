"""Renderers for table views: rich (terminal), Markdown, LaTeX and CSV.

Published cells print as the paper prints them (one decimal); our cells add n and the 95% Wilson interval,
and a row measured under a non-standard protocol is marked with a dagger so it is never mistaken for a
comparable number.
"""

from __future__ import annotations

import csv
import html
import io

from rich.table import Table

from .ablation import AblationRow, AblationView, ablation_records
from .tables import Cell, Row, TableView, mark_notes, method_label, table_records

FORMATS = ("rich", "markdown", "csv", "latex", "html")


def _value(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    if cell.rate is None:
        return f"err {cell.errors}" if cell.errors else "–"
    return f"{cell.rate:.1f}"


def _marks(cell: Cell | None, row: Row) -> str:
    """What one of our cells covers when it is not the whole protocol, and whether its run finished."""
    return "" if cell is None or row.kind != "ours" else cell.marks


def _detail(cell: Cell | None, row: Row) -> str:
    """Interval, n, errors and marks of one of our cells ('' for published cells)."""
    if cell is None or row.kind != "ours":
        return ""
    detail = f"[{cell.ci_low:.1f}, {cell.ci_high:.1f}] n={cell.n}" if cell.ci_low is not None else ""
    if cell.errors and cell.rate is not None:
        detail += f" err={cell.errors}"
    marks = _marks(cell, row)
    return f"{detail} · {marks}".strip(" ·") if marks else detail


def _cells(view: TableView, row: Row, detail_format: str) -> list[str]:
    """Each column's text for one row: the value, then n and the interval formatted by `detail_format`."""
    texts = []
    for column in view.columns:
        cell = row.cells.get(column.label)
        detail = _detail(cell, row)
        texts.append(_value(cell) + (detail_format.format(detail) if detail else ""))
    return texts


def _method(row: Row) -> str:
    return method_label(row)


def _source(row: Row) -> str:
    return "published" if row.kind == "published" else "ours"


def _ranked(view: TableView) -> bool:
    return any(r.rank is not None for r in view.rows)


def _rank(row: Row) -> str:
    return "–" if row.rank is None else str(row.rank)


def to_rich(views: list[TableView]) -> list[Table]:
    tables = []
    for view in views:
        table = Table(title=view.title, title_justify="left")
        ranked = _ranked(view)
        if ranked:
            table.add_column("Rank", justify="right")
        table.add_column("Method")
        table.add_column("Setting")
        table.add_column("Source")
        for column in view.columns:
            table.add_column(column.label, justify="right")
        for row in view.rows:
            style = "dim" if row.kind == "published" else None
            table.add_row(*([_rank(row)] if ranked else []), _method(row), row.setting, _source(row),
                          *_cells(view, row, "\n[dim]{}[/dim]"), style=style)
        notes = mark_notes(view.rows)
        if notes:
            table.caption = "\n".join(notes)
        tables.append(table)
    return tables


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(views: list[TableView]) -> str:
    out = []
    for view in views:
        ranked = _ranked(view)
        header = [*(["Rank"] if ranked else []), "Method", "Setting", "Source", *[c.label for c in view.columns]]
        lines = [f"### {view.title}", "", "| " + " | ".join(map(_md_escape, header)) + " |",
                 "|" + "|".join(["---:"] * ranked + ["---"] * 3 + ["---:"] * len(view.columns)) + "|"]
        for row in view.rows:
            cells = [*([_rank(row)] if ranked else []), _method(row), row.setting, _source(row),
                     *_cells(view, row, " {}")]
            lines.append("| " + " | ".join(map(_md_escape, cells)) + " |")
        for note in mark_notes(view.rows):
            lines += ["", note]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_LATEX_SPECIALS = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                   "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                   "π": r"$\pi$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "–": "--", "Δ": r"$\Delta$", "—": "---"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def to_latex(views: list[TableView]) -> str:
    out = []
    for view in views:
        ranked = _ranked(view)
        spec = "r" * ranked + "lll" + "r" * len(view.columns)
        lines = [f"% {latex_escape(view.title)}", r"\begin{tabular}{" + spec + "}", r"\toprule",
                 " & ".join([*(["Rank"] if ranked else []), "Method", "Setting", "Source",
                             *[latex_escape(c.label) for c in view.columns]]) + r" \\", r"\midrule"]
        for row in view.rows:
            cells = []
            for column in view.columns:
                cell = row.cells.get(column.label)
                value = latex_escape(_value(cell))
                if row.kind == "ours" and cell is not None and cell.ci_low is not None:
                    value += rf"\,{{\scriptsize[{cell.ci_low:.1f}, {cell.ci_high:.1f}]}}"
                if _marks(cell, row):
                    value += rf"\,{{\scriptsize {latex_escape(_marks(cell, row))}}}"
                cells.append(value)
            lines.append(" & ".join([*([latex_escape(_rank(row))] if ranked else []), latex_escape(_method(row)),
                                     latex_escape(row.setting), _source(row), *cells]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% {latex_escape(note)}" for note in mark_notes(view.rows)]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1d1d1f; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.3rem 0.7rem; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f5; } td.text, th.text { text-align: left; }
tr.published { color: #666; font-style: italic; }
tr.ours { font-weight: 600; }
.badge { font-size: 0.7rem; padding: 0.1rem 0.4rem; border-radius: 0.6rem; background: #e5e5ea; font-style: normal; }
tr.ours .badge { background: #d4f0dc; }
small { color: #777; font-weight: normal; display: block; }
td.partial { background: #fff6e0; } td.partial small { color: #8a5a00; }
"""


def _html_cell(cell: Cell | None, row: Row) -> str:
    """One td: the value, then interval and n; a partial or unfinished cell is marked visibly and says why
    in its tooltip."""
    esc = html.escape
    detail = _detail(cell, row)
    body = esc(_value(cell)) + (f"<small>{esc(detail)}</small>" if detail else "")
    if not _marks(cell, row):
        return f"<td>{body}</td>"
    reasons = ([f"covers {cell.coverage} of the protocol: not a suite score, not averaged, not ranked"]
               if cell.coverage else []) + (["from a run that did not finish"] if cell.unfinished else [])
    return f'<td class="partial" title="{esc("; ".join(reasons))}">{body}</td>'


def to_html(views: list[TableView], title: str = "qdepth-bench leaderboard", note: str = "") -> str:
    """A standalone HTML page (inline style, no scripts): one table per view, published rows marked."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
             f"<style>{_HTML_STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    if note:
        parts.append(f"<p>{esc(note)}</p>")
    for view in views:
        ranked = _ranked(view)
        parts.append(f"<h2>{esc(view.title)}</h2>")
        parts.append(f'<table id="{esc(view.id)}"><thead><tr>' + ("<th>Rank</th>" if ranked else "")
                     + '<th class="text">Method</th><th class="text">Setting</th><th class="text">Source</th>'
                     + "".join(f"<th>{esc(c.label)}</th>" for c in view.columns) + "</tr></thead><tbody>")
        for row in view.rows:
            cells = "".join(_html_cell(row.cells.get(c.label), row) for c in view.columns)
            parts.append(f'<tr class="{row.kind}">' + (f"<td>{esc(_rank(row))}</td>" if ranked else "")
                         + f'<td class="text">{esc(_method(row))}</td><td class="text">{esc(row.setting)}</td>'
                         + f'<td class="text"><span class="badge">{esc(_source(row))}</span></td>{cells}</tr>')
        parts.append("</tbody></table>")
        parts += [f"<p><small>{esc(note)}</small></p>" for note in mark_notes(view.rows)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def to_csv(views: list[TableView]) -> str:
    records = table_records(views)
    buffer = io.StringIO()
    fields = list(records[0]) if records else ["table", "kind", "method", "column", "success_rate"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- ablations

CHECK, CROSS = "✓", "✗"


def _ablation_header(view: AblationView) -> list[str]:
    return ["Model", *view.spec.components, *view.spec.columns, "Avg", "Δ vs full", "paired test"]


def _ablation_cells(view: AblationView, row: AblationRow) -> list[str]:
    own = Row(view.source, "", "")
    marks = [CROSS if c in row.variant.removes else CHECK for c in view.spec.components]
    rates = [_value(cell) + (f" ({_marks(cell, own)})" if _marks(cell, own) else "")
             for cell in (row.cells[label] for label in view.spec.columns)]
    average = "–" if row.average.rate is None else f"{row.average.rate:.1f}"
    if _marks(row.average, own):
        average += f" ({_marks(row.average, own)})"
    delta = "–" if row.delta is None or row.variant.policy == view.spec.full else f"{row.delta:+.1f}"
    test = "" if row.p_value is None else f"p={row.p_value:.3f} ({row.discordant[0]}/{row.discordant[1]})"
    return [row.variant.label, *marks, *rates, average, delta, test]


def ablation_to_rich(views: list[AblationView]) -> list[Table]:
    tables = []
    for view in views:
        table = Table(title=view.title, title_justify="left")
        for i, name in enumerate(_ablation_header(view)):
            table.add_column(name, justify="left" if i == 0 else "center")
        for row in view.rows:
            table.add_row(*_ablation_cells(view, row))
        if view.source == "ours":
            table.caption = ("paired test: exact McNemar against the full model on the same episodes "
                             "(only-full / only-variant successes)")
        tables.append(table)
    return tables


def ablation_to_markdown(views: list[AblationView]) -> str:
    out = []
    for view in views:
        header = _ablation_header(view)
        lines = [f"### {view.title}", "", "| " + " | ".join(map(_md_escape, header)) + " |",
                 "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(map(_md_escape, _ablation_cells(view, row))) + " |" for row in view.rows]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def ablation_to_latex(views: list[AblationView]) -> str:
    out = []
    for view in views:
        header = _ablation_header(view)
        lines = [f"% {latex_escape(view.title)}", r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
                 " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
        for row in view.rows:
            cells = [latex_escape(c).replace(CHECK, r"\cmark").replace(CROSS, r"\xmark")
                     for c in _ablation_cells(view, row)]
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        out.append("\n".join(lines))
    return "% needs \\newcommand{\\cmark}{\\ding{51}} and \\newcommand{\\xmark}{\\ding{55}} (pifont)\n" + \
        "\n\n".join(out) + "\n"


def ablation_to_csv(views: list[AblationView]) -> str:
    records = ablation_records(views)
    buffer = io.StringIO()
    fields: list[str] = []
    for record in records:
        fields += [k for k in record if k not in fields]
    writer = csv.DictWriter(buffer, fieldnames=fields or ["ablation"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()

"""Grids as LaTeX tabulars (booktabs): intervals and marks in scriptsize, footnotes as comments."""

from __future__ import annotations

from qdepth_bench.report.render.grid import CHECK, CROSS, Grid

_SPECIALS = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "π": r"$\pi$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "–": "--",
    "Δ": r"$\Delta$",
    "—": "---",
    CHECK: r"\cmark",
    CROSS: r"\xmark",
}
_ALIGN = {"left": "l", "right": "r", "center": "c"}
_MARK_MACROS = "% needs \\newcommand{\\cmark}{\\ding{51}} and \\newcommand{\\xmark}{\\ding{55}} (pifont)\n"


def latex_escape(text: str) -> str:
    return "".join(_SPECIALS.get(ch, ch) for ch in text)


def render(grids: list[Grid]) -> str:
    out = []
    for grid in grids:
        lines = [
            f"% {latex_escape(grid.title)}",
            r"\begin{tabular}{" + "".join(_ALIGN[c.align] for c in grid.columns) + "}",
            r"\toprule",
            " & ".join(latex_escape(c.label) for c in grid.columns) + r" \\",
            r"\midrule",
        ]
        for row in grid.rows:
            cells = []
            for cell in row.cells:
                text = latex_escape(cell.value)
                if cell.interval:
                    text += rf"\,{{\scriptsize{cell.interval}}}"
                if cell.marks:
                    text += rf"\,{{\scriptsize {latex_escape(cell.marks)}}}"
                cells.append(text)
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% {latex_escape(note)}" for note in grid.notes]
        out.append("\n".join(lines))
    marks = any(c.value in (CHECK, CROSS) for g in grids for r in g.rows for c in r.cells)
    return (_MARK_MACROS if marks else "") + "\n\n".join(out) + "\n"

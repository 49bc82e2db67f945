"""Every relative link in the README and the docs pages points at a file that exists (and, with a #fragment, at
a heading of that page), so moving text between pages can never leave a reader at a dead end."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: [text](target) outside code spans; images too
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def broken_links(root: Path = ROOT) -> list[str]:
    broken = []
    for page in _pages(root):
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are code
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not files here
                continue
            path, _, fragment = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(root)} -> {target}"
            if not resolved.exists():
                broken.append(f"{where}: no such file")
            elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
                broken.append(f"{where}: no such heading")
    return broken


def test_every_relative_link_in_readme_and_docs_resolves():
    assert broken_links() == []


def test_the_link_check_finds_a_dead_link_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("[ok](docs/a.md#two) [gone](docs/b.md) [web](https://example.org) `[x](y)`\n")
    (tmp_path / "docs" / "a.md").write_text("# One\n\n## Two\n\n[up](../README.md) [nowhere](#three)\n")
    assert broken_links(tmp_path) == ["README.md -> docs/b.md: no such file", "docs/a.md -> #three: no such heading"]

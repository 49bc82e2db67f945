"""The one registry mechanism: named entries of one kind, unknown names answered with the closest match.

Policies, suites, simulators, ablations and the paper's reference tables are each a `Registry`. Entries
that are content (YAML files under `content/` and the `QDEPTH_BENCH_CONTENT` roots) are read by
`from_content`; later roots win on a name clash, so users can override a built-in entry.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from qdepth_bench.core.errors import UserError
from qdepth_bench.registry.content import content_dirs

T = TypeVar("T")


def unknown_name(kind: str, name: str, known: list[str], where: str = "") -> UserError:
    """A `UserError` naming the closest known name and listing them all."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(
        f"unknown {kind} '{name}'.{hint} Known: {', '.join(sorted(known)) or 'none'}"
        + (f" ({where})." if where else ".")
    )


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order."""

    def __init__(self, kind: str, where: str = "") -> None:
        self.kind = kind
        #: where users add entries of this kind, said when a name is unknown
        self.where = where
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> None:
        """Add (or replace) one entry."""
        self._entries[name] = entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise unknown_name(self.kind, name, list(self._entries), self.where)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    @classmethod
    def from_content(cls, kind: str, folder: str, parse: Callable[[Path], tuple[str, T]]) -> Registry[T]:
        """The (name, entry) that `parse` reads from each YAML file of one content folder, built-in roots first."""
        registry: Registry[T] = cls(kind, f"content folder {folder}/")
        for directory in content_dirs(folder):
            for path in sorted(directory.glob("*.yaml")):
                registry.register(*parse(path))
        return registry


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({yaml_problem(exc)}); fix the file's syntax.") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a YAML mapping; see content/policies/random.yaml for the form.")
    return data


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error in one line: the parser's problem and where, without its quoted excerpt."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem or exc.context} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def import_target(target: str) -> Any:
    """Import `module:attr`, with one clear line when it does not resolve."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UserError(f"'{target}' is not of the form module:Class.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"cannot import '{module_name}' for '{target}': {exc}. "
            "Install the package that provides it or fix the path."
        ) from exc
    try:
        return functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise UserError(f"module '{module_name}' has no '{attr}'; check the class name in '{target}'.") from None


def parse_key_values(pairs: list[str], what: str = "--policy-arg") -> dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what} '{pair}' is not key=value.")
        out[key.strip()] = value.strip()
    return out

"""Names -> policies and suites.

Policies are registered by YAML files in `policies/` (name, class, options), suites by family files in
`suites/` (protocol constants, per-suite values, groups). A policy can also be given as `module:Class` or as
a path to a YAML file. Options come from the YAML and from `--policy-arg key=value`, checked against the
policy's `Config` dataclass and converted to its field types. Unknown names fail with the closest match.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .content import content_dirs
from .envs import BACKENDS, INSTALL_HINTS
from .errors import UserError
from .policy import Policy
from .suite import Backend, SuiteSpec


def unknown_name(kind: str, name: str, known: list[str]) -> UserError:
    """A `UserError` naming the closest known name and listing them all."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown {kind} '{name}'.{hint} Known: {', '.join(sorted(known))}.")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read {path}: {exc}. Fix the file's YAML syntax.") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a YAML mapping; see policies/random.yaml for the form.")
    return data


# ----------------------------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class PolicyEntry:
    """A registered policy: which class to build and with which default options."""

    name: str
    target: str
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _policy_entry(path: Path) -> PolicyEntry:
    data = read_yaml(path)
    missing = [k for k in ("name", "class") if k not in data]
    if missing:
        raise UserError(f"{path} lacks '{missing[0]}'; a policy file needs 'name' and 'class' (module:Class).")
    return PolicyEntry(str(data["name"]), str(data["class"]), str(data.get("description", "")),
                       dict(data.get("options") or {}), str(path))


@lru_cache(maxsize=1)
def policy_entries() -> dict[str, PolicyEntry]:
    """Every policy registered in the content folders, by name."""
    entries: dict[str, PolicyEntry] = {}
    for folder in content_dirs("policies"):
        for path in sorted(folder.glob("*.yaml")):
            entry = _policy_entry(path)
            entries[entry.name] = entry
    return entries


def import_target(target: str) -> Any:
    """Import `module:attr`, with one clear line when it does not resolve."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UserError(f"'{target}' is not of the form module:Class.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import '{module_name}' for '{target}': {exc}. "
                        "Install the package that provides it or fix the path.") from exc
    try:
        return getattr(module, attr)
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


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML or command-line value to a config field's declared type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is tuple or annotation is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        item_type = args[0] if args else str
        return tuple(_convert(v.strip() if isinstance(v, str) else v, item_type, key) for v in items if v != "")
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if annotation in (int, float, str):
            return annotation(value)
    except (TypeError, ValueError):
        raise UserError(f"option '{key}={value}' is not a valid {annotation.__name__}.") from None
    return value


def build_config(config_cls: type, options: dict[str, Any], policy: str) -> Any:
    """Instantiate a policy's Config dataclass from options, rejecting unknown keys."""
    if not dataclasses.is_dataclass(config_cls):
        if options:
            raise UserError(f"policy '{policy}' takes no options (got {', '.join(options)}).")
        return config_cls()
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UserError(f"policy '{policy}' has no option '{unknown[0]}'. Options: {', '.join(sorted(fields))}.")
    return config_cls(**{k: _convert(v, hints[k], k) for k, v in options.items()})


def make_policy(ref: str, args: dict[str, str] | None = None) -> Policy:
    """Build a policy from a registered name, a `module:Class` path or a policy YAML file."""
    args = args or {}
    entries = policy_entries()
    if ref in entries:
        entry = entries[ref]
    elif ref.endswith((".yaml", ".yml")) and Path(ref).is_file():
        entry = _policy_entry(Path(ref))
    elif ":" in ref:
        entry = PolicyEntry(ref, ref)
    else:
        raise unknown_name("policy", ref, list(entries))
    cls = import_target(entry.target)
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise UserError(f"'{entry.target}' is not a qdepth_bench.policy.Policy subclass.")
    config = build_config(cls.Config, {**entry.options, **args}, entry.name)
    return cls(config, name=entry.name)


# ------------------------------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class SuiteRegistry:
    suites: dict[str, SuiteSpec]
    groups: dict[str, tuple[str, ...]]
    aliases: dict[str, str]

    def names(self) -> list[str]:
        return [*self.suites, *self.groups, *self.aliases]

    def resolve(self, name: str) -> list[SuiteSpec]:
        """A suite, alias or group name -> the suites it stands for."""
        name = self.aliases.get(name, name)
        if name in self.suites:
            return [self.suites[name]]
        if name in self.groups:
            return [self.suites[s] for s in self.groups[name]]
        raise unknown_name("suite", name, self.names())


_SUITE_KEYS = {"benchmark", "n_tasks", "label", "max_steps", "aliases", "max_steps_alternatives", "protocol",
               "backend", "backends", "tasks"}


def _family_suites(path: Path) -> tuple[list[SuiteSpec], dict[str, tuple[str, ...]]]:
    data = read_yaml(path)
    for key in ("family", "protocol_version", "protocol", "suites"):
        if key not in data:
            raise UserError(f"{path} lacks '{key}'; see suites/libero.yaml for the form of a suite family.")
    specs = []
    for name, values in data["suites"].items():
        values = dict(values or {})
        unknown = sorted(set(values) - _SUITE_KEYS)
        if unknown:
            raise UserError(f"{path}: suite '{name}' has unknown key '{unknown[0]}'.")
        protocol = {**data["protocol"], **values.get("protocol", {})}
        if "max_steps" in values:
            protocol["max_steps"] = values["max_steps"]
        tasks = list(values.get("tasks", []))
        if tasks:  # per-task grids (SIMPLER): the runner's caps are the largest task's
            from .envs.simpler_grid import grid_episode_counts

            protocol["max_steps"] = max(int(t["max_steps"]) for t in tasks)
            protocol["tasks"] = tasks
            protocol["trials_per_task"] = max(grid_episode_counts(protocol))
        alternatives = {}
        if "max_steps_alternatives" in values:
            alternatives["max_steps"] = dict(values["max_steps_alternatives"])
        backend = str(values.get("backend", data.get("backend", "")))
        specs.append(SuiteSpec(
            name=name, family=str(data["family"]), backend=backend,
            backends=tuple(values.get("backends", [backend])),
            protocol_version=int(data["protocol_version"]), robot=str(data.get("robot", "")),
            protocol=protocol, n_tasks=len(tasks) or int(values.get("n_tasks", 1)), label=str(values.get("label", name)),
            aliases=tuple(values.get("aliases", ())), alternatives=alternatives,
            extra={"benchmark": values.get("benchmark", name), "source": str(path), "tasks": tasks},
        ))
    groups = {g: tuple(members) for g, members in (data.get("groups") or {}).items()}
    return specs, groups


@lru_cache(maxsize=1)
def suite_registry() -> SuiteRegistry:
    """Every suite family in the content folders."""
    suites: dict[str, SuiteSpec] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for folder in content_dirs("suites"):
        for path in sorted(folder.glob("*.yaml")):
            specs, family_groups = _family_suites(path)
            suites.update({s.name: s for s in specs})
            groups.update(family_groups)
    aliases = {alias: s.name for s in suites.values() for alias in s.aliases}
    for group, members in groups.items():
        missing = [m for m in members if m not in suites]
        if missing:
            raise UserError(f"suite group '{group}' names unknown suite '{missing[0]}'.")
    return SuiteRegistry(suites, groups, aliases)


def make_backend(spec: SuiteSpec) -> Backend:
    """The simulator backend for a suite; one clear line when its simulator is not installed."""
    if spec.backend not in BACKENDS:
        if spec.backend in INSTALL_HINTS:
            raise UserError(f"suite '{spec.name}' needs the {spec.backend} backend: {INSTALL_HINTS[spec.backend]}.")
        raise UserError(f"suite '{spec.name}' names unknown backend '{spec.backend}'. "
                        f"Known: {', '.join(sorted(BACKENDS))}.")
    module_name, _, cls_name = BACKENDS[spec.backend].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"suite '{spec.name}' needs the {spec.backend} simulator, which is not installed "
                        f"({exc.name or exc}). Fix: {INSTALL_HINTS.get(spec.backend, 'install it')}.") from exc
    return getattr(module, cls_name)(spec)

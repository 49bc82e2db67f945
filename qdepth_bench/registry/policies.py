"""Names -> policies.

Policies are registered by YAML files in `content/policies/` (name, class, options). A policy can also be
given as `module:Class` or as a path to a YAML file. Options come from the YAML and from `--policy-arg
key=value`, checked against the policy's `Config` dataclass and converted to its field types.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.policy import Policy
from qdepth_bench.registry.base import Registry, import_target, read_yaml


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
    return PolicyEntry(
        str(data["name"]),
        str(data["class"]),
        str(data.get("description", "")),
        dict(data.get("options") or {}),
        str(path),
    )


@lru_cache(maxsize=1)
def policy_registry() -> Registry[PolicyEntry]:
    """Every policy registered in the content folders, by name."""

    def parse(path: Path) -> tuple[str, PolicyEntry]:
        entry = _policy_entry(path)
        return entry.name, entry

    return Registry.from_content("policy", "policies", parse)


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML or command-line value to a config field's declared type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is dict or annotation is dict:  # on the command line a YAML mapping: model={time_max_period: 100}
        import yaml

        parsed = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(parsed, dict):
            raise UserError(f"option '{key}={value}' is not a mapping; write it as {key}={{name: value}}.")
        return parsed
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
    try:
        return config_cls(**{k: _convert(v, hints[k], k) for k, v in options.items()})
    except ValueError as exc:  # the config's own range checks (`check_ranges`)
        raise UserError(f"policy '{policy}': {exc}; pass another --policy-arg value.") from None


def make_policy(ref: str, args: dict[str, str] | None = None) -> Policy:
    """Build a policy from a registered name, a `module:Class` path or a policy YAML file."""
    args = args or {}
    if ref.endswith((".yaml", ".yml")) and Path(ref).is_file():
        entry = _policy_entry(Path(ref))
    elif ":" in ref and ref not in policy_registry():
        entry = PolicyEntry(ref, ref)
    else:
        entry = policy_registry().get(ref)
    cls = import_target(entry.target)
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise UserError(f"'{entry.target}' is not a qdepth_bench.core.policy.Policy subclass.")
    config = build_config(cls.Config, {**entry.options, **args}, entry.name)
    return cls(config, name=entry.name)

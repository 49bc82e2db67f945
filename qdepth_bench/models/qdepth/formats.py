"""Checkpoints of other pi0 implementations, loaded into this project's one model.

A format is data (`content/formats/<name>.yaml`): how its keys map onto this model's (`rename`), which of its
keys are the same tensor under two names (`tied`, or written once under one of them: `saved_once`) or play
no part in actions (`ignored`), which of this model's keys it may lack (`unfilled`, each with its reason),
its math as configuration fields (`conventions`, see `models/qdepth/config.py`), the head layout its weight
shapes cannot tell (`layout`), where and how its normalisation statistics are stored (`statistics`), and
the policies carrying its checkpoint families' evaluation conventions (`policies`). Sizes (widths, layers,
MLP widths, vocabulary, image and patch size, state and action dims) are read from the weights, so a reduced
model of the same structure loads like the full one.

Loading is strict: a key without a rule, a key the model needs but the file lacks, a shape that differs or
a tied pair that is not equal is refused in one line naming the first few.
"""

from __future__ import annotations

import fnmatch
import json
import pickle
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from qdepth_bench.core.errors import UserError
from qdepth_bench.core.hashing import file_hash, stable_hash
from qdepth_bench.core.policy import CHECKPOINT_WEIGHTS
from qdepth_bench.models.qdepth.checkpoint import LoadedCheckpoint, NormStats, make_tokenizer
from qdepth_bench.models.qdepth.config import ExpertConfig, QDepthConfig, TextConfig, VisionConfig, build_config
from qdepth_bench.models.qdepth.model import QDepthVLA
from qdepth_bench.models.qdepth.tokenizer import FolderTokenizer, HashWordTokenizer
from qdepth_bench.registry.base import read_yaml
from qdepth_bench.registry.content import content_dirs

#: An open-pi-zero checkpoint file (its trainer writes `step<N>.pt`).
TORCH_SUFFIXES = (".pt", ".pth")


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    description: str
    strip_prefixes: tuple[str, ...]
    rename: tuple[tuple[str, str], ...]
    tied: tuple[tuple[str, str], ...]
    saved_once: tuple[tuple[str, str], ...]
    ignored: tuple[tuple[str, str], ...]
    unfilled: tuple[tuple[str, str], ...]
    conventions: dict[str, Any]
    layout: dict[str, int]
    statistics: dict[str, Any]
    source: Path
    #: the policies that carry this format's checkpoint families' evaluation conventions
    policies: tuple[str, ...] = ()

    def strip(self, key: str) -> str:
        for prefix in self.strip_prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        return key


def _pairs(data: dict[str, Any], field: str) -> tuple[tuple[str, str], ...]:
    return tuple((str(a), str(b)) for a, b in data.get(field, []))


@cache
def checkpoint_format(name: str) -> CheckpointFormat:
    """The format named `name` from the content folders (a user's root wins on clashes)."""
    found = {p.stem: p for folder in content_dirs("formats") for p in sorted(folder.glob("*.yaml"))}
    if name not in found:
        raise UserError(f"unknown checkpoint format '{name}'; known: {', '.join(sorted(found))}.")
    data = read_yaml(found[name])
    try:
        return CheckpointFormat(
            str(data["name"]),
            str(data.get("description", "")),
            tuple(data.get("strip_prefixes", [])),
            _pairs(data, "rename"),
            _pairs(data, "tied"),
            _pairs(data, "saved_once"),
            _pairs(data, "ignored"),
            _pairs(data, "unfilled"),
            dict(data.get("conventions", {})),
            {str(k): int(v) for k, v in data.get("layout", {}).items()},
            dict(data.get("statistics", {})),
            found[name],
            tuple(data.get("policies", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"{found[name]}: missing or malformed field {exc}; see content/formats/open-pi-zero.yaml."
        ) from None


def detect_format(path: Path) -> str:
    """The format of a checkpoint path: "" for this project's folders, a format name for another
    implementation's (an open-pi-zero `.pt` file; a folder whose safetensors keys are openpi's pi0)."""
    if path.is_file():
        return "open-pi-zero" if path.suffix in TORCH_SUFFIXES else "?"
    if (path / "config.json").is_file() and (path / "norm_stats.json").is_file():
        try:
            if "variant" in json.loads((path / "config.json").read_text()):
                return ""
        except ValueError:
            return ""  # this project's loader names the damaged file
    weights = weights_file(path)
    if weights.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                if any(k.removeprefix("model.").startswith("paligemma_with_expert.") for k in f.keys()):
                    return "openpi-pi0"
        except (SafetensorError, OSError):
            return ""  # the loader names the damaged file
    return ""


def weights_file(path: Path) -> Path:
    """The file holding a checkpoint's weights: the path itself, or a folder's `model.safetensors`."""
    return path / CHECKPOINT_WEIGHTS if path.is_dir() else path


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: a `torch.save` file, or a safetensors file or folder (`model.safetensors`)."""
    weights = weights_file(path)
    if weights.suffix != ".safetensors":
        return read_torch_state(weights)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.is_file():
        raise UserError(f"{path} has no model.safetensors; point --checkpoint at the checkpoint's folder.")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{weights} is corrupt ({exc}); re-download it.") from None


def read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a `torch.save` checkpoint (`{"model": state_dict, ...}` or a bare state dict),
    read with `weights_only=True` so the file cannot run code."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} cannot be read as a torch checkpoint ({first}); re-download it.") from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path} holds no state dict (expected a dict with a `model` entry of tensors).")
    return state


#: pi0 has two experts: the VLM (0) and the action expert (1), which `{action}` in a key map stands for
PI0_ACTION_EXPERT = 1


def rename_state(fmt: CheckpointFormat, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The reference state dict under this model's key names: every reference key is renamed, tied (and
    equal to its twin) or ignored; anything else is refused by name."""
    state = {fmt.strip(k): v for k, v in state.items()}
    for kept, dropped in fmt.saved_once:  # tied weights a saver wrote under one of their names
        if kept in state and dropped not in state:
            state[dropped] = state[kept]
    renamed: dict[str, torch.Tensor] = {}
    unknown, untied = [], []
    for key, tensor in state.items():
        tie = next((re.sub(p, t, key) for p, t in fmt.tied if re.fullmatch(p, key)), None)
        if tie is not None:
            if tie not in state or (not tensor.is_meta and not torch.equal(state[tie], tensor)):
                untied.append(key)
            continue
        if any(re.fullmatch(p, key) for p, _ in fmt.ignored):
            continue
        target = next((re.sub(p, t, key) for p, t in fmt.rename if re.fullmatch(p, key)), None)
        if target is None:
            unknown.append(key)
        else:
            renamed[target.replace("{action}", str(PI0_ACTION_EXPERT))] = tensor
    if unknown:
        raise UserError(
            f"{path} has keys the {fmt.name} format does not map: {_first(unknown)}; is it another format or "
            f"model? (key map: {fmt.source})"
        )
    if untied:
        raise UserError(
            f"{path}: {_first(untied)} differ from the weights they are tied to; untied mixtures are not supported."
        )
    return renamed


def _one(state: dict[str, torch.Tensor], key: str, fmt: CheckpointFormat, path: Path) -> torch.Tensor:
    if key not in state:
        raise UserError(f"{path} has no weights for {key}, which every {fmt.name} checkpoint has; another format?")
    return state[key]


def _layers(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))}
    return max(found) + 1 if found else 0


def infer_config(
    fmt: CheckpointFormat, state: dict[str, torch.Tensor], path: Path, overrides: dict[str, Any]
) -> QDepthConfig:
    """The pi0 configuration of a renamed state dict (`rename_state`): sizes from the weights, head layout
    and conventions from the format (each overridable, e.g. a training with another time_max_period)."""
    layout = {**fmt.layout, **{k: int(v) for k, v in overrides.items() if k in fmt.layout}}
    conventions = {**fmt.conventions, **{k: v for k, v in overrides.items() if k not in fmt.layout}}
    head_dim, vision_heads = layout["head_dim"], layout["vision_heads"]

    def shape(key: str) -> torch.Size:
        return _one(state, key, fmt, path).shape

    patch, grid = (
        shape("vision.embeddings.patch_embedding.weight"),
        round(shape("vision.embeddings.position_embedding.weight")[0] ** 0.5),
    )
    vlm, action = "mot.experts.0.0.", f"mot.experts.{PI0_ACTION_EXPERT}.0."
    vision = VisionConfig(
        hidden_size=patch[0],
        intermediate_size=shape("vision.encoder.layers.0.mlp.fc1.weight")[0],
        num_hidden_layers=_layers(state, r"vision\.encoder\.layers\.(\d+)\..+"),
        num_attention_heads=vision_heads,
        image_size=grid * patch[2],
        patch_size=patch[2],
    )
    embed = shape("embed_tokens.weight")
    text = TextConfig(
        hidden_size=embed[1],
        intermediate_size=shape(vlm + "mlp.gate_proj.weight")[0],
        num_hidden_layers=_layers(state, r"mot\.experts\.0\.(\d+)\..+"),
        num_attention_heads=shape(vlm + "self_attn.q_proj.weight")[0] // head_dim,
        num_key_value_heads=shape(vlm + "self_attn.k_proj.weight")[0] // head_dim,
        head_dim=head_dim,
        vocab_size=embed[0],
    )
    expert = ExpertConfig(
        hidden_size=shape(action + "self_attn.q_proj.weight")[1],
        intermediate_size=shape(action + "mlp.gate_proj.weight")[0],
    )
    try:
        return build_config(
            "full",
            "pi0",
            vision=vision,
            text=text,
            action_expert=expert,
            depth_expert=expert,
            depth_grid=grid,
            state_dim=shape("state_in.weight")[1],
            action_dim=shape("action_out.weight")[0],
            **conventions,
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"{fmt.source} or the policy's options give a bad model field ({exc}).") from None


def _first(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def check_against_model(
    fmt: CheckpointFormat, renamed: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path
) -> None:
    """Every renamed weight has the model's shape, and every model key is filled or declared `unfilled`."""
    extra = [k for k in renamed if k not in expected]
    if extra:
        raise UserError(f"{path}: weights the model has no place for: {_first(extra)} ({fmt.name} format).")
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in renamed.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise UserError(f"{path}: shapes differ from the model its sizes describe: {_first(mismatched)}.")
    missing = [k for k in expected if k not in renamed and not any(re.fullmatch(p, k) for p, _ in fmt.unfilled)]
    if missing:
        raise UserError(f"{path} lacks weights the model needs: {_first(missing)} ({fmt.name} format).")


def load_foreign_model(
    path: Path, format_name: str, overrides: dict[str, Any] | None = None
) -> tuple[QDepthVLA, QDepthConfig]:
    """The model of a foreign checkpoint file with its weights loaded (unfilled keys keep their initial
    values), and its configuration."""
    fmt = checkpoint_format(format_name)
    renamed = rename_state(fmt, read_state(path), path)
    config = infer_config(fmt, renamed, path, overrides or {})
    model = QDepthVLA(config)
    check_against_model(fmt, renamed, model.state_dict(), path)
    model.load_state_dict(renamed, strict=False)
    return model, config


def _statistics_layout(fmt: CheckpointFormat, path: Path) -> dict[str, Any]:
    """The format's statistics layout whose file pattern matches `path` (the first one otherwise)."""
    layouts = fmt.statistics.get("layouts", [])
    if not layouts:
        raise UserError(f"{fmt.source} declares no statistics layouts; add one under statistics.layouts.")
    return next((lay for lay in layouts if fnmatch.fnmatch(path.name, lay["file"])), layouts[0])


def find_statistics(fmt: CheckpointFormat, folder: Path) -> Path | None:
    """The one statistics file a checkpoint folder holds in any of the format's layouts (openpi:
    assets/<id>/norm_stats.json; LeRobot: its normaliser processor's safetensors), else None."""
    found = {f for lay in fmt.statistics.get("layouts", []) for f in folder.glob(f"**/{lay['file']}")}
    return found.pop() if len(found) == 1 else None


def read_statistics(fmt: CheckpointFormat, path: Path) -> NormStats:
    """The family's normalisation statistics (the format's `statistics`: a kind and file layouts): bounds
    (low/high percentiles) or z-score (mean/std) per dimension of the suite's state and actions, before any
    padding to the model's widths; action dimensions the family never normalised (`raw_action_dims`, e.g.
    open-pi-zero's gripper) pass through. JSON files are nested mappings (`root`, then state/action, then the
    statistic); safetensors files are flat (`<state>.<statistic>`), as LeRobot's processors save them."""
    spec = fmt.statistics
    if not path.is_file():
        raise UserError(f"statistics file {path} does not exist; point -a statistics= at the checkpoint family's file.")
    layout = _statistics_layout(fmt, path)
    kind = spec.get("kind", "bounds")
    low, high = ("mean", "std") if kind == "zscore" else (spec["low"], spec["high"])
    names = [(layout["state"], low), (layout["state"], high), (layout["action"], low), (layout["action"], high)]
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(path))
            bounds = [flat[f"{group}.{stat}"].double().flatten().tolist() for group, stat in names]
        else:
            data = json.loads(path.read_text())
            for key in layout.get("root", []):
                data = data[key]
            bounds = [list(map(float, data[group][stat])) for group, stat in names]
    except (ValueError, KeyError, TypeError, OSError) as exc:
        wanted = ", ".join(f"{group}/{stat}" for group, stat in names)
        raise UserError(f"{path} is not a {fmt.name} statistics file (needs {wanted}; missing {exc!r}).") from None
    for dim in spec.get("raw_action_dims", []):
        bounds[2][dim], bounds[3][dim] = -1.0, 1.0
    state_low, state_high, action_low, action_high = bounds
    return NormStats(state_low, state_high, action_low, action_high, kind=kind)


def load_foreign_checkpoint(
    path: Path,
    format_name: str,
    overrides: dict[str, Any],
    statistics: Path | None,
    tokenizer_folder: Path | None,
    device: str = "cpu",
) -> LoadedCheckpoint:
    """A foreign checkpoint file ready for the policy: model, statistics, tokenizer, and an identity hash
    covering the weights and the statistics file (both decide the actions)."""
    fmt = checkpoint_format(format_name)
    if statistics is None and path.is_dir():  # openpi and LeRobot keep them beside the weights
        statistics = find_statistics(fmt, path)
    if statistics is None:
        raise UserError(
            f"{path.name} is a {fmt.name} checkpoint, which ships without its normalisation statistics: pass "
            "-a statistics=FILE (e.g. open-pi-zero's config/bridge_statistics.json) or use its family's policy."
        )
    model, config = load_foreign_model(path, format_name, overrides)
    stats = read_statistics(fmt, statistics)
    tokenizer: FolderTokenizer | HashWordTokenizer
    if config.tokenizer == "folder":
        if tokenizer_folder is None or not (tokenizer_folder / "tokenizer_config.json").is_file():
            raise UserError(
                f"{fmt.name} checkpoints read prompts with PaliGemma's tokenizer: pass -a tokenizer=FOLDER, a local "
                "copy of google/paligemma-3b-pt-224 (its tokenizer files are enough)."
            )
        tokenizer = FolderTokenizer(tokenizer_folder, config.max_text_tokens)
    else:
        tokenizer = make_tokenizer(config, None)
    identity = stable_hash([file_hash(weights_file(path)), file_hash(statistics)])
    return LoadedCheckpoint(model.to(device).eval(), stats, tokenizer, "pi0", identity, path)

"""Data commands: `data generate` (demonstrations) and `depth annotate|encode` (the depth expert's targets)."""

from __future__ import annotations

import functools
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from qdepth_bench.cli.common import DEFAULT_WORKERS, build_policy, console, data_app, depth_app, err_console
from qdepth_bench.core.errors import INTERRUPTED_EXIT, UserError
from qdepth_bench.datasets.formats import read_episodes
from qdepth_bench.eval.episode import EpisodeResult
from qdepth_bench.eval.plan import RunPlan
from qdepth_bench.registry.base import parse_key_values
from qdepth_bench.registry.sims import make_backend
from qdepth_bench.registry.suites import suite_registry


@data_app.command("generate")
def data_generate(
    suite: Annotated[str, typer.Argument(help="a LIBERO suite (libero_object) or simpler_widowx (ManiSkill3)")],
    policy: Annotated[str, typer.Option("--policy", "-p", help="the demonstrator (e.g. scripted)")] = "scripted",
    episodes_per_task: Annotated[int, typer.Option(help="successful demonstrations to keep per task")] = 20,
    tasks: Annotated[str | None, typer.Option(help="task ids, e.g. 0-4 (default: all)")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default: data/<suite>_<policy>)")] = None,
    workers: Annotated[int, typer.Option(help="env worker processes")] = DEFAULT_WORKERS,
    policy_arg: Annotated[list[str] | None, typer.Option("--policy-arg", "-a", help="policy option key=value")] = None,
    data_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="libero_hdf5 (LIBERO suites), bridge_rlds or fractal_rlds (simpler_widowx); default: the "
            "simulator's first",
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="end each attempt after this many steps (default: the task's)")
    ] = None,
    stand_ins: Annotated[
        bool, typer.Option("--stand-ins", help="SIMPLER: a box table where the stage mesh is missing (non-standard)")
    ] = False,
) -> None:
    """Roll out a demonstrator from fresh initial states, keep the successes, and write them as a dataset:
    one LIBERO-format HDF5 per task (frames, proprio, actions, simulator states), or for SIMPLER WidowX an
    Open-X RLDS builder folder in the Bridge V2 or Fractal layout (<out>/bridge_dataset/1.0.0)."""
    from qdepth_bench.eval.generate import generate

    specs = suite_registry().resolve(suite)
    if len(specs) != 1:
        raise UserError(f"data generate takes one suite (e.g. libero_object), not the group '{suite}'.")
    overrides = {"max_steps": max_steps, "stand_ins": stand_ins or None}
    spec = specs[0].with_overrides({k: v for k, v in overrides.items() if v is not None})
    out = out or Path("data") / f"{spec.name}_{policy}"
    agent = build_policy(policy, parse_key_values(policy_arg or []))
    backend = make_backend(spec)
    command = shlex.join(["qdepth-bench", *sys.argv[1:]])
    progress: dict[str, int] = {"success": 0, "failure": 0, "error": 0}

    def on_plan(plan: RunPlan) -> None:
        console.print(
            f"{spec.name} · {agent.name} · {len(plan.pending)} attempts to run "
            f"({len(plan.episodes) - len(plan.pending)} already done) -> {out}",
            highlight=False,
        )

    def on_episode(result: EpisodeResult) -> None:
        if not result.will_retry:
            progress[result.status] += 1
        console.print(
            f"  {result.episode.key} {result.status} ({result.steps} steps)"
            + (f": {result.error}" if result.error else ""),
            highlight=False,
        )

    try:
        counts = generate(
            spec,
            backend,
            agent,
            tasks,
            episodes_per_task,
            out,
            workers,
            command,
            data_format,
            on_plan=on_plan,
            on_episode=on_episode,
        )
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished attempts are kept in {out}; run the same command to continue.")
        raise typer.Exit(INTERRUPTED_EXIT) from None
    finally:
        agent.close()
    for task_id, n in counts.items():
        console.print(f"task {task_id}: {n}/{episodes_per_task} demonstrations", highlight=False)
    short = [t for t, n in counts.items() if n < episodes_per_task]
    if short:
        err_console.print(
            f"tasks {short} have fewer demonstrations than asked: the demonstrator rarely succeeds "
            "there; their files hold what succeeded."
        )


class DepthSource(str, Enum):
    sim = "sim"
    vida = "vida"
    model = "model"


class Normalisation(str, Enum):
    episode = "episode"
    frame = "frame"


def _device(device: str) -> str:
    """`auto`: the GPU when torch sees one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@depth_app.command("annotate")
def depth_annotate(
    datasets: Annotated[list[Path], typer.Argument(help="LIBERO HDF5 files, LeRobot folders or RLDS builder folders")],
    source: Annotated[
        DepthSource,
        typer.Option(
            help="sim: restore recorded states and render depth; vida: Video-Depth-Anything over each episode "
            "(the paper's labels); model: a Depth-Anything-V2 transformers folder, frame by frame"
        ),
    ] = DepthSource.sim,
    checkpoint: Annotated[
        Path | None, typer.Option(help="with --source vida: video_depth_anything_vits.pth or _vitl.pth")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="with --source model: a local depth model folder")] = None,
    normalise: Annotated[
        Normalisation, typer.Option(help="relative depth from percentiles over each episode or each frame")
    ] = Normalisation.episode,
    data_format: Annotated[
        str | None, typer.Option("--format", help="libero_hdf5, lerobot or rlds (default: found from the path)")
    ] = None,
    layout: Annotated[
        str, typer.Option(help="with RLDS data: the dataset's field layout (bridge, fractal)")
    ] = "bridge",
    input_size: Annotated[int, typer.Option(help="with --source vida: the network's short side in pixels")] = 518,
    batch: Annotated[int, typer.Option(help="vida: windows of 32 frames per pass; model: images per pass")] = 1,
    device: Annotated[str, typer.Option(help="auto (a GPU when present, half precision), cpu or cuda")] = "auto",
    suite: Annotated[
        str | None,
        typer.Option(help="with --source sim: the suite of the demos (default: found from the file's scene)"),
    ] = None,
) -> None:
    """Relative depth for every frame, in a sidecar beside each dataset (re-running skips finished episodes)."""
    from qdepth_bench.datasets import depth as depth_cache

    estimator: tuple[object, str] | None = None
    if source is DepthSource.vida:
        if checkpoint is None:
            raise UserError("--source vida needs --checkpoint FILE (video_depth_anything_vits.pth or _vitl.pth).")
        from qdepth_bench.models.vida.checkpoint import load_checkpoint

        estimator = load_checkpoint(checkpoint)
    elif source is DepthSource.model and model is None:
        raise UserError("--source model needs --model FOLDER (a Depth Anything V2 model saved locally).")
    for dataset in datasets:
        if not dataset.exists():
            raise UserError(f"{dataset} does not exist.")
        episodes = functools.partial(read_episodes, dataset, data_format, layout=layout)
        if source is DepthSource.sim:
            frames = depth_cache.sim_frames(dataset, suite)
            settings = depth_cache.DepthSettings("sim", "", normalise.value)
        elif estimator is not None:
            frames = depth_cache.vida_frames(episodes, estimator[0], input_size, batch, _device(device))
            settings = depth_cache.DepthSettings("vida", estimator[1], normalise.value)
        else:
            assert model is not None
            frames = depth_cache.model_frames(episodes, model, batch, _device(device))
            settings = depth_cache.DepthSettings("model", depth_cache.folder_hash(model), normalise.value)
        counts = depth_cache.annotate(
            dataset, frames, settings, lambda demo, n: console.print(f"  {demo}: {n} frames", highlight=False)
        )
        console.print(
            f"{dataset}: annotated {counts['annotated']} demos ({counts['frames']} frames), skipped "
            f"{counts['skipped']} already done -> {depth_cache.cache_path(dataset)}",
            highlight=False,
        )


@depth_app.command("encode")
def depth_encode(
    datasets: Annotated[list[Path], typer.Argument(help="annotated datasets")],
    vqvae: Annotated[Path, typer.Option(help="folder of a trained depth VQ-VAE")],
) -> None:
    """Turn annotated depth into VQ-VAE code indices (the depth expert's targets)."""
    from qdepth_bench.train.vqvae import encode_dataset

    for dataset in datasets:
        n = encode_dataset(dataset, vqvae)
        console.print(f"{dataset}: encoded {n} frames (frames already encoded by this VQ-VAE skipped)", highlight=False)

"""Video-Depth-Anything against its reference code: per-frame outputs and the windowed long-video procedure
at a reduced size (fixtures made by running the reference, see tests/data/vida/README.md), and the released
vits/vitl key lists loading strictly into this package's model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_vida import FIXTURES, TINY, read_shapes

from qdepth_bench.core.errors import UserError
from qdepth_bench.models.vida.checkpoint import UNUSED, convert, load_checkpoint, load_state, seeded_weights
from qdepth_bench.models.vida.config import VidaConfig, preset
from qdepth_bench.models.vida.inference import align_windows, infer_video, preprocess, window_inputs
from qdepth_bench.models.vida.model import VideoDepthAnything, sinusoid_table


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "parity.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def tiny() -> VideoDepthAnything:
    model = VideoDepthAnything(VidaConfig(**TINY))  # type: ignore[arg-type]
    load_state(model, seeded_weights(read_shapes("tiny")))
    return model.eval()


def test_per_frame_outputs_match_the_reference(tiny: VideoDepthAnything, fixture: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        ours = tiny(torch.from_numpy(fixture["clip"])).numpy()
    assert ours.shape == fixture["per_frame"].shape
    assert np.abs(ours - fixture["per_frame"]).max() < 1e-5


def test_window_alignment_reproduces_the_reference_exactly(fixture: dict[str, np.ndarray]) -> None:
    """Given the reference's own per-window depth, the joined video is the reference's to the last bit."""
    joined = align_windows(iter(fixture["windows"]), len(fixture["frames"]))
    assert np.array_equal(joined, fixture["video"])


def test_windowed_video_matches_the_reference(tiny: VideoDepthAnything, fixture: dict[str, np.ndarray]) -> None:
    """End to end on a clip of three windows. Float32 rounding differs from the reference's (fused
    attention kernels) by about one part in 1e6 of the depth range; the least-squares alignment amplifies
    that a little, so both the windows and the joined video are held to 1e-5 of the depth's range."""
    frames = fixture["frames"]
    slots = window_inputs(len(frames))
    assert len(slots) == 3  # the clip spans more than two windows
    tolerance = 1e-5 * np.abs(fixture["video"]).max()
    with torch.no_grad():
        windows = tiny(preprocess(frames, frames.shape[1])[torch.from_numpy(slots)]).numpy()
    assert np.abs(windows - fixture["windows"]).max() < tolerance
    for batch_windows in (1, 3):  # batching windows must not change the result beyond rounding
        ours = infer_video(tiny, frames, input_size=frames.shape[1], batch_windows=batch_windows)
        assert ours.shape == fixture["video"].shape
        assert np.abs(ours - fixture["video"]).max() < tolerance


def test_frame_position_code_is_the_references(fixture: dict[str, np.ndarray]) -> None:
    assert np.abs(sinusoid_table(32, 32).numpy() - fixture["pe"]).max() < 1e-6


def test_key_frames_carry_the_first_frame_and_the_previous_middle() -> None:
    slots = window_inputs(50)
    assert slots[1, :10].tolist() == [0, 12, *range(24, 32)]
    assert slots[2, :10].tolist() == [0, 34, *range(46, 50), *[49] * 4]
    assert slots[2, 10:].tolist() == [49] * 22  # past the end the last frame repeats


@pytest.mark.parametrize("size", ["vits", "vitl"])
def test_released_key_lists_load_strictly(size: str) -> None:
    """The released files' names and shapes (from the reference on the meta device) fit our model exactly."""
    released = read_shapes(size)
    with torch.device("meta"):
        model = VideoDepthAnything(preset(size))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted = convert({k: torch.empty(s, device="meta") for k, s in released.items()})
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    fused = sum(k.endswith(("attn.qkv.weight", "attn.qkv.bias")) for k in released)
    assert len(converted) == len(released) - len(UNUSED) + 2 * fused


def test_a_checkpoint_of_another_size_is_refused_in_one_line(tmp_path) -> None:
    weights = seeded_weights(read_shapes("tiny"))
    weights["pretrained.cls_token"] = torch.zeros(1, 1, 384)  # claims vits, holds the tiny head
    path = tmp_path / "video_depth_anything_vits.pth"
    torch.save(weights, path)
    with pytest.raises(UserError, match="does not fit this Video-Depth-Anything size"):
        load_checkpoint(path)

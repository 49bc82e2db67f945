"""What a hostile or unlucky user meets (issue 42's probe): usage errors and unreadable policy files are one
line, SIGTERM at start-up ends as Ctrl-C does, the simulator's import warnings stay off stderr, a dead video
encoder on a full disk is one retried error, and the policy server names a client's fault as a bad request."""

from __future__ import annotations

import dataclasses
import errno
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qdepth_bench.eval import videos

EXE = str(Path(sys.executable).with_name("qdepth-bench"))


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_bad_option_value_is_one_line_naming_the_help(tmp_path):
    result = subprocess.run(
        [EXE, "run", "libero_object", "--policy", "noop", "--seed", "abc", "--db", str(tmp_path / "d.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    (line,) = stderr_lines(result.stderr)
    assert line.startswith("error: Invalid value for '--seed'") and "qdepth-bench run --help" in line
    assert not (tmp_path / "d.sqlite").exists()


def test_unknown_command_and_option_are_one_line(cli):
    for args, expected in ((("runn",), "No such command 'runn'"), (("run", "libero_object", "--bogus"), "--bogus")):
        result = cli(*args, db=False)
        assert result.exit_code == 2
        (line,) = stderr_lines(result.stderr)
        assert line.startswith("error: ") and expected in line


def test_a_policy_yaml_that_does_not_parse_is_one_line(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: mine\nclass: qdepth_bench.policies.noop:NoopPolicy\n  options: [1\n")
    result = cli("run", "libero_object", "--policy", str(bad))
    assert result.exit_code == 2
    (line,) = stderr_lines(result.stderr)
    assert f"{bad} is not valid YAML" in line and "line 3" in line


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_sigterm_during_start_up_ends_as_ctrl_c_does(tmp_path, delay):
    db = tmp_path / "fresh" / "bench.sqlite"
    process = subprocess.Popen(
        [EXE, "run", "libero_object", "--policy", "noop", "--tasks", "0", "--episodes", "1", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)  # still importing the command modules (torch among them)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    (line,) = stderr_lines(err)
    assert line.startswith("interrupted")
    assert not db.exists()


@pytest.mark.slow
def test_importing_libero_prints_no_robosuite_macro_warnings():
    code = (
        "from qdepth_bench.sims.libero.assets import require_assets\n"
        "from qdepth_bench.sims.libero.backend import _import_libero\n"
        "_import_libero(require_assets())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "macro" not in result.stderr and result.stderr.strip() == ""


class _DyingWriter:
    """imageio's writer when ffmpeg died on a full disk: the frame pipe breaks (EPIPE, not ENOSPC)."""

    def __init__(self, path: str, **kwargs: object) -> None:
        self.path = Path(path)

    def __enter__(self) -> _DyingWriter:
        self.path.write_bytes(b"")  # ffmpeg had opened its output
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def append_data(self, frame: np.ndarray) -> None:
        raise OSError(errno.EPIPE, "[Errno 32] Broken pipe\n\nFFMPEG COMMAND:\n/usr/bin/ffmpeg -y -f rawvideo ...")


def test_an_encoder_dying_on_a_full_disk_is_one_transient_line_and_leaves_no_file(tmp_path, monkeypatch):
    import imageio.v2 as imageio

    from qdepth_bench.core.errors import is_transient

    monkeypatch.setattr(imageio, "get_writer", _DyingWriter)
    monkeypatch.setattr(videos, "_disk_full", lambda folder: True)
    frames = [np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(OSError) as caught:
        videos.write_video(tmp_path / "run" / "ep.mp4", frames, fps=20)
    assert caught.value.errno == errno.ENOSPC and is_transient(caught.value)
    assert "\n" not in str(caught.value) and "ffmpeg" not in str(caught.value).lower()
    assert list((tmp_path / "run").iterdir()) == []

    monkeypatch.setattr(videos, "_disk_full", lambda folder: False)  # another encoder failure: permanent
    with pytest.raises(RuntimeError) as caught:
        videos.write_video(tmp_path / "run" / "ep.mp4", frames, fps=20)
    assert "Broken pipe" in str(caught.value) and not is_transient(caught.value)
    assert "\n" not in str(caught.value) and "FFMPEG COMMAND" not in str(caught.value)
    assert list((tmp_path / "run").iterdir()) == []


def test_the_server_calls_an_episode_key_never_reset_a_bad_request():
    from qdepth_bench.core.policy import TaskInfo
    from qdepth_bench.registry.policies import make_policy
    from qdepth_bench.remote.server import PolicyServer
    from qdepth_bench.remote.wire import BATCH_KEY, pack, unpack

    task = TaskInfo("libero_object", 0, "t", "pick", "panda", (-1,) * 7, (1,) * 7, (0,) * 7, "libero")
    server = PolicyServer(make_policy("random"), task)
    request = {
        BATCH_KEY: 1,
        "keys": ["never-reset"],
        "instructions": ["pick"],
        "state": np.zeros((1, 8), np.float64),
        "images/main": np.zeros((1, 224, 224, 3), np.uint8),
    }
    reply = server.answer(pack(request), connection=0, started=set())
    assert isinstance(reply, str) and reply.startswith("bad request: episode key 'never-reset' was never reset")
    request["resets"] = [{"key": "never-reset", "seed": 0, "task": dataclasses.asdict(task)}]
    assert isinstance(server.answer(pack(request), connection=0, started=set()), bytes)
    del request["resets"]  # reset once, it is known from then on
    assert unpack(server.answer(pack(request), connection=0, started=set()))["actions"].shape[0] == 1

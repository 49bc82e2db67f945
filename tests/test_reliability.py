"""What a hostile or unlucky user meets (issue 42's probe): usage errors and unreadable policy files are one
line, SIGTERM at start-up ends as Ctrl-C does, the simulator's import warnings stay off stderr, a dead video
encoder on a full disk is one retried error, and the policy server names a client's fault as a bad request."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows, episodes_recorded, run_cli_subprocess

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


def run_process(db: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [EXE, "run", "libero_object", "--policy", "noop", "--tasks", "0", "--episodes", "1", "--db", str(db), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_sigterm_during_start_up_ends_as_ctrl_c_does(tmp_path, delay):
    db = tmp_path / "fresh" / "bench.sqlite"
    process = run_process(db)
    time.sleep(delay)  # still importing the command modules (torch among them)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    (line,) = stderr_lines(err)
    assert line.startswith("interrupted")
    assert not db.exists()


@pytest.mark.slow
def test_sigterm_once_the_database_exists_leaves_no_empty_run_nor_a_new_empty_file(tmp_path):
    db = tmp_path / "fresh" / "bench.sqlite"
    process = run_process(db)
    deadline = time.monotonic() + 120
    while not db.exists() and time.monotonic() < deadline:  # the run has opened (created) its database
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    (line,) = stderr_lines(err)
    assert line.startswith("interrupted")
    if db.exists():  # only when an episode was recorded before the signal: then every run kept has episodes
        runs = db_rows(db, "select run_id, (select count(*) from episodes e where e.run_id = r.run_id) from runs r")
        assert runs and all(n > 0 for _, n in runs)


def test_run_refuses_a_damaged_database_without_writing_a_byte(tmp_path):
    from test_store import episode, run_record

    from qdepth_bench.results.store import Store

    db = tmp_path / "r.sqlite"
    store = Store(db)
    store.start_run(run_record("r1"))
    store.record_episode(episode("r1", 0, "success"))
    store.db.conn.execute("pragma wal_checkpoint(truncate)")
    root = store.db.conn.execute("select rootpage from sqlite_master where name = 'runs'").fetchone()[0]
    page = store.db.conn.execute("pragma page_size").fetchone()[0]
    store.db.conn.close()
    with open(db, "r+b") as f:  # zero the runs table's page, as a torn write would
        f.seek(page * (root - 1))
        f.write(bytes(page))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = subprocess.run(
        [EXE, "run", "libero_object", "--policy", "noop", "--tasks", "0", "--episodes", "1", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    (line,) = stderr_lines(result.stderr)
    assert "is damaged" in line and "runs salvage" in line
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


@pytest.mark.slow
def test_errors_after_every_attempt_are_run_again_with_retry_errors(tmp_path):
    marker = tmp_path / "broken"
    marker.touch()
    db = tmp_path / "r.sqlite"
    args = [
        "run",
        "libero_object",
        "--policy",
        "helpers_policies:FlakyPolicy",
        "--policy-arg",
        f"broken_while={marker}",
        "--tasks",
        "0",
        "--episodes",
        "2",
        "--max-steps",
        "5",
        "--workers",
        "1",
        "--db",
        str(db),
    ]
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    first = run_cli_subprocess(*args, cwd=tmp_path, env=env)
    assert first.returncode == 3
    (line,) = stderr_lines(first.stderr)
    assert "2 failed 3 times" in line and "--retry-errors" in line and "runs delete" not in line
    marker.unlink()  # the cause is fixed
    again = run_cli_subprocess(*args, cwd=tmp_path, env=env)
    assert again.returncode == 3 and "(2 already recorded)" in again.stdout  # a plain re-run does not retry them
    retried = run_cli_subprocess(*args, "--retry-errors", cwd=tmp_path, env=env)
    assert retried.returncode == 0, retried.stderr
    rows = db_rows(db, "select status, attempts from episodes order by episode_index")
    assert [status for status, _ in rows] == ["failure", "failure"]


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


@pytest.mark.slow
def test_sigterm_stops_the_policy_server_as_ctrl_c_does():
    import socket

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [EXE, "serve", "--policy", "random", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and "serving random" in server.stdout.readline()
    server.send_signal(signal.SIGTERM)
    _, err = server.communicate(timeout=60)
    assert server.returncode == 0
    assert stderr_lines(err) == ["server stopped."]


@pytest.mark.slow
def test_a_video_disk_that_fills_mid_run_leaves_errors_the_next_run_retries(tmp_path):
    videos_dir = tmp_path / "videos"
    videos_dir.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=210m", "tmpfs", str(videos_dir)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small filesystem here (needs root); the encoder test above simulates it")
    db = tmp_path / "r.sqlite"
    args = ["--tasks", "0", "--episodes", "3", "--max-steps", "20", "--workers", "1", "--video", str(videos_dir)]
    try:
        command = [EXE, "run", "libero_object", "--policy", "noop", *args, "--db", str(db)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            if episodes_recorded(db) >= 1:
                break
            time.sleep(0.05)
        filler = videos_dir / "filler"
        with open(filler, "wb") as f:  # the disk fills after the first episode
            try:
                while True:
                    f.write(bytes(1 << 20))
                    f.flush()
            except OSError:
                pass
        out, err = process.communicate(timeout=600)
        assert process.returncode == 3, err
        (line,) = stderr_lines(err)
        assert "may pass by themselves" in line and "the disk holding the --video folder is full" in line
        assert "ffmpeg" not in line.lower() and str(tmp_path) not in line.replace(str(db), "")
        errors = db_rows(db, "select error_kind, error from episodes where status = 'error'")
        assert errors and all(kind == "transient" for kind, _ in errors)
        assert all("\n" not in error for _, error in errors)
        assert not [p for p in videos_dir.rglob("*.mp4") if p.stat().st_size == 0]

        filler.unlink()  # space freed: the same command runs the errored episodes again, keeps the rest
        again = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        statuses = db_rows(db, "select status from episodes")
        assert len(statuses) == 3 and all(s == "failure" for (s,) in statuses)
        assert len(list(videos_dir.rglob("*.mp4"))) == 3
    finally:
        subprocess.run(["umount", "-l", str(videos_dir)], capture_output=True)

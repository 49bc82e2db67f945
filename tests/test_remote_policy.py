"""`qdepth-bench serve` on a loopback port: openpi's own client gets action chunks, bad requests get an
error reply and the server keeps serving, and a real LIBERO episode runs through `--policy remote`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import db_rows, episodes_recorded, run_cli_subprocess

from qdepth_bench.core.errors import UserError
from qdepth_bench.remote.wire import pack, unpack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int, cwd: Path, *args: str) -> subprocess.Popen:
    """`qdepth-bench serve ARGS` on `port`, returned once its health check answers."""
    exe = Path(sys.executable).with_name("qdepth-bench")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
                if reply.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("server did not come up")


@pytest.fixture
def server(tmp_path):
    """A `qdepth-bench serve --policy random` process on a free port; yields its port."""
    procs = []

    def start(*args: str) -> int:
        port = free_port()
        procs.append(serve(port, tmp_path, *args))
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


def openpi_obs(size: int = 224) -> dict:
    rng = np.random.default_rng(0)
    return {
        "observation/image": rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": "pick up the soup",
    }


def test_wire_round_trip_and_refuses_object_arrays():
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int64(3), "c": ["x", 1]}
    back = unpack(pack(data))
    np.testing.assert_array_equal(back["a"], data["a"])
    assert back["b"] == 3 and back["b"].dtype == np.int64 and back["c"] == ["x", 1]
    with pytest.raises(ValueError):
        pack({"bad": np.array([object()])})


def test_openpi_client_gets_chunks_and_bad_requests_do_not_stop_the_server(server):
    pytest.importorskip("openpi_client")
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    port = server("--policy", "random", "--max-request-mb", "2")
    client = WebsocketClientPolicy(host="127.0.0.1", port=port)
    metadata = client.get_server_metadata()
    assert metadata["policy"]["policy_name"] == "random" and metadata["requirements"]["cameras"] == ["main"]
    reply = client.infer(openpi_obs())
    assert reply["actions"].shape == (5, 7) and reply["server_timing"]["infer_ms"] >= 0

    bad = openpi_obs()
    del bad["observation/state"]
    with pytest.raises(RuntimeError, match="missing key 'observation/state'"):
        client.infer(bad)
    wrong = openpi_obs(size=64)
    with pytest.raises(RuntimeError, match="must be uint8"):
        client.infer(wrong)
    assert client.infer(openpi_obs())["actions"].shape == (5, 7)  # the same connection still serves

    with connect(f"ws://127.0.0.1:{port}") as ws:  # a client that leaves mid-request
        ws.recv()
        ws.send(pack(openpi_obs()))
    with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:  # a request over --max-request-mb
        ws.recv()
        ws.send(b"\x00" * (3 << 20))
        with pytest.raises(ConnectionClosed):  # the server closes the connection (1009, message too big)
            ws.recv(timeout=10)
    other = WebsocketClientPolicy(host="127.0.0.1", port=port)
    assert other.infer(openpi_obs())["actions"].shape == (5, 7)


@pytest.mark.slow
def test_libero_episode_through_the_remote_policy_records_the_served_identity(server, tmp_path):
    from qdepth_bench.registry.policies import make_policy

    port = server("--policy", "random")
    db = tmp_path / "r.sqlite"
    result = run_cli_subprocess(
        "run",
        "libero_object",
        "--policy",
        "remote",
        "--policy-arg",
        f"url=ws://127.0.0.1:{port}",
        "--tasks",
        "0",
        "--episodes",
        "2",
        "--max-steps",
        "10",
        "--workers",
        "2",
        "--db",
        str(db),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    local = make_policy("random").identity()
    runs = db_rows(db, "select policy_name, policy_config_hash, policy_checkpoint_hash from runs")
    assert runs == [("random", local.config_hash, "")]
    rows = db_rows(db, "select status, steps from episodes order by episode_index")
    assert len(rows) == 2 and all(status in ("success", "failure") for status, _ in rows)
    # the same episodes run locally give the same outcomes: the served policy is the same policy
    local_db = tmp_path / "local.sqlite"
    assert (
        run_cli_subprocess(
            "run",
            "libero_object",
            "--policy",
            "random",
            "--tasks",
            "0",
            "--episodes",
            "2",
            "--max-steps",
            "10",
            "--db",
            str(local_db),
            cwd=tmp_path,
        ).returncode
        == 0
    )
    assert db_rows(local_db, "select status, steps from episodes order by episode_index") == rows


def test_unreachable_server_is_one_line():
    from qdepth_bench.registry.policies import make_policy

    with pytest.raises(UserError, match="cannot reach a policy server at ws://127.0.0.1:"):
        make_policy("remote", {"url": f"ws://127.0.0.1:{free_port()}", "timeout_s": "5"})
    with pytest.raises(UserError, match="url=ws://"):
        make_policy("remote")


@pytest.mark.slow
def test_a_dead_server_leaves_transient_errors_that_the_next_run_retries(tmp_path):
    port, db = free_port(), tmp_path / "r.sqlite"
    args = [
        "run", "libero_object", "--policy", "remote", "--policy-arg", f"url=ws://127.0.0.1:{port}",
        "--policy-arg", "retries=1", "--tasks", "0", "--episodes", "3", "--max-steps", "60", "--workers", "1",
        "--db", str(db),
    ]  # fmt: skip
    server = serve(port, tmp_path, "--policy", "noop")
    exe = Path(sys.executable).with_name("qdepth-bench")
    run = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not episodes_recorded(db):
        assert time.time() < deadline and run.poll() is None
        time.sleep(0.3)
    server.kill()  # the server dies mid-run
    server.wait()
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 3, stderr
    assert "run the same command again" in stderr.strip().splitlines()[-1]
    errors = db_rows(db, "select error_kind from episodes where status = 'error'")
    assert errors and all(kind == "transient" for (kind,) in errors)
    server = serve(port, tmp_path, "--policy", "noop")  # back
    try:
        again = run_cli_subprocess(*args, cwd=tmp_path)
    finally:
        server.kill()
        server.wait()
    assert again.returncode == 0, again.stderr
    assert db_rows(db, "select count(*) from episodes where status != 'error'") == [(3,)]

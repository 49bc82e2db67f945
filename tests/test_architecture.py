"""The layers point one way, read from the code's own import statements (lazy ones inside functions too)."""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import subprocess
import typing
from pathlib import Path

import pytest
from conftest import run_cli_subprocess
from helpers_toy_sim import install_toy_plugin

import qdepth_bench

PACKAGE = Path(qdepth_bench.__file__).parent

#: package -> layer; a module may import its own package and lower layers only
LAYERS = {
    "core": 0,
    "registry": 1,
    "datasets": 2,
    "models": 2,
    "remote": 2,
    "results": 2,
    "sims": 3,
    "policies": 3,
    "eval": 4,
    "report": 5,
    "train": 6,
    "cli": 7,
}
#: lower-layer imports that are forbidden all the same (policies and simulators meet only in core's types)
FORBIDDEN = {("report", "models"), ("eval", "sims"), ("policies", "sims"), ("sims", "policies")}


def _imports(path: Path) -> set[str]:
    """The project's modules that one file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qdepth_bench"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("qdepth_bench")}
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_violations(package: Path = PACKAGE) -> list[str]:
    violations = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        source = rel.parts[0] if len(rel.parts) > 1 else ""
        if source not in LAYERS:
            continue
        for module in _imports(path):
            target = _package(module)
            if target == source or target == "":
                if target == "" and source == "core":
                    violations.append(f"{rel} imports {module}: core imports nothing of the project but itself")
                continue
            if target not in LAYERS:
                violations.append(f"{rel} imports {module}, a package with no layer in this test")
            elif LAYERS[target] > LAYERS[source] or (source, target) in FORBIDDEN:
                violations.append(f"{rel} ({source}) imports {module} ({target})")
    return violations


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)


def test_no_import_points_up():
    assert import_violations() == []


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker is not vacuous: a core module importing the engine is reported."""
    fake = tmp_path / "qdepth_bench"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "__init__.py").write_text("")
    (fake / "core" / "bad.py").write_text("def f():\n    from qdepth_bench.eval.engine import execute\n")
    assert import_violations(fake) == ["core/bad.py (core) imports qdepth_bench.eval.engine (eval)"]


def test_the_rule_catches_a_policy_importing_a_simulator(tmp_path):
    fake = tmp_path / "qdepth_bench"
    (fake / "policies").mkdir(parents=True)
    (fake / "policies" / "bad.py").write_text("from qdepth_bench.sims.simpler.adapters import widowx_gripper\n")
    assert import_violations(fake) == ["policies/bad.py (policies) imports qdepth_bench.sims.simpler.adapters (sims)"]


#: the CLI's shared modules; every other module of cli/ is a command (group), which imports none of the others
CLI_SHARED = {"__init__", "common", "progress"}


def command_imports(package: Path = PACKAGE) -> list[str]:
    """Command modules of cli/ that import another command module (what two commands share belongs in
    cli/common.py, cli/progress.py or below the CLI)."""
    found = []
    for path in sorted((package / "cli").glob("*.py")):
        if path.stem in CLI_SHARED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "qdepth_bench.cli":
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qdepth_bench.cli."):
                names = [(node.module or "").split(".")[2]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[2] for a in node.names if a.name.startswith("qdepth_bench.cli.")]
            else:
                continue
            found += [f"cli/{path.name} imports cli/{name}.py" for name in names if name not in CLI_SHARED]
    return found


def test_no_command_module_imports_another():
    assert command_imports() == []


def test_the_command_rule_catches_one_command_importing_another(tmp_path):
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "bad.py").write_text("def f():\n    from qdepth_bench.cli.run import open_run_store\n")
    (tmp_path / "cli" / "worse.py").write_text("from qdepth_bench.cli import common, train\n")
    assert command_imports(tmp_path) == ["cli/bad.py imports cli/run.py", "cli/worse.py imports cli/train.py"]


def tuples_sent(package: Path = PACKAGE) -> list[str]:
    """Places in the engine's package that `send` a tuple literal (an untyped worker message)."""
    found = []
    for path in sorted((package / "eval").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "send":
                if any(isinstance(arg, ast.Tuple) for arg in node.args):
                    found.append(f"{path.name}:{node.lineno}")
    return found


def test_worker_messages_are_typed_dataclasses_with_a_kind():
    """Engine and workers talk in `eval.messages`' dataclasses, one kind each, and nothing sends a bare tuple."""
    from qdepth_bench.eval import messages

    classes = [*typing.get_args(messages.ToWorker), *typing.get_args(messages.FromWorker)]
    assert all(dataclasses.is_dataclass(cls) and isinstance(cls.kind, str) for cls in classes)
    assert len({cls.kind for cls in classes}) == len(classes)
    assert tuples_sent() == []


def test_the_typed_message_check_catches_a_tuple(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "bad.py").write_text("def f(pool):\n    pool.send(0, ('chunk', None))\n")
    assert tuples_sent(tmp_path) == ["bad.py:2"]


@pytest.mark.slow
def test_a_toy_simulator_is_one_module_and_one_registration(tmp_path):
    """helpers_toy_sim.py plus one entry point (as a plugin package declares it); doctor, suites, the
    requirement checks and the tables pick it up, and its env workers find it in spawned processes."""
    env = install_toy_plugin(tmp_path, trials_per_task=3, max_steps=8)
    db = str(tmp_path / "toy.sqlite")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run_cli_subprocess(*args, cwd=tmp_path, env=env, timeout=300)

    assert "toy line world" in cli("doctor", "--db", db).stdout
    listed = cli("suites").stdout
    assert "line_reach" in listed and "toy_line" in listed
    refused = cli("run", "line_reach", "--policy", "helpers_toy_sim:NeedsDepth", "--db", db)
    assert refused.returncode == 2 and "depth" in refused.stderr and "toy_line" in refused.stderr
    ran = cli("run", "line_reach", "--policy", "helpers_toy_sim:PushRight", "--workers", "2", "--db", db)
    assert ran.returncode == 0, ran.stderr
    rows = [r for r in csv.DictReader(io.StringIO(cli("table", "line_reach", "-f", "csv", "--db", db).stdout))]
    suite_cell = [r for r in rows if r["task"] == ""]
    assert [(r["method"], r["success_rate"], r["n"]) for r in suite_cell] == [
        ("helpers_toy_sim:PushRight (toy_line)", "100.0", "6")
    ]

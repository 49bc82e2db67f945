"""Tables, the ablation report, the leaderboard (incl. HTML in headless Chromium) and figures, from a
database filled by real short LIBERO runs of several policies."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import db_rows, run_cli_subprocess

from qdepth_bench.registry.content import builtin_root

SHORT = ["--tasks", "0,1", "--episodes", "2", "--max-steps", "10"]


@pytest.fixture(scope="module")
def runs_db(tmp_path_factory) -> Path:
    """Real runs of three policy identities on libero_object (random twice: two configs)."""
    folder = tmp_path_factory.mktemp("runs")
    db = folder / "r.sqlite"
    for args in (["--policy", "random"], ["--policy", "noop"], ["--policy", "random", "--policy-arg", "scale=0.5"]):
        result = run_cli_subprocess("run", "libero_object", *args, *SHORT, "--db", str(db), cwd=folder)
        assert result.returncode == 0, result.stderr
    return db


def cli_out(db: Path, *args: str) -> str:
    result = run_cli_subprocess(*args, "--db", str(db), cwd=db.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_every_format_agrees_with_the_episodes_table(runs_db):
    records = list(csv.DictReader(io.StringIO(cli_out(runs_db, "table", "libero_object", "--format", "csv"))))
    ours = [r for r in records if r["kind"] == "ours"]
    methods = {r["method"] for r in ours}
    assert len(methods) == 3 and "noop" in methods  # two random configs are told apart by their config hash
    assert all(m.startswith("random [") for m in methods - {"noop"})
    markdown = cli_out(runs_db, "table", "libero_object", "--format", "markdown")
    latex = cli_out(runs_db, "table", "libero_object", "--format", "latex")
    html = cli_out(runs_db, "table", "libero_object", "--format", "html")
    for record in ours:
        run_ids = tuple(re.findall(r"[0-9a-f]{12}", record["run_ids"]))
        task_filter = "" if record["task"] == "" else f" and task_id = {int(record['task'])}"
        ((n, k),) = db_rows(
            runs_db,
            "select sum(status != 'error'), sum(status = 'success') from episodes "
            f"where run_id in ({','.join('?' * len(run_ids))}){task_filter}",
            run_ids,
        )
        assert int(record["n"]) == n and int(record["successes"]) == k
        rate = f"{100 * k / n:.1f}"
        assert float(record["success_rate"]) == pytest.approx(100 * k / n, abs=1e-3)
        interval = f"[{float(record['ci_low']):.1f}, {float(record['ci_high']):.1f}]"
        assert f"{rate} {interval} n={n}" in markdown
        assert f"{rate}\\,{{\\scriptsize{interval}}}" in latex
        assert f"{interval} n={n}" in html


@pytest.mark.slow
def test_leaderboard_ranks_ours_among_published_and_renders_everywhere(runs_db, tmp_path):
    markdown = cli_out(runs_db, "leaderboard", "--format", "markdown")
    assert "| Rank |" in markdown and "QDepth-VLA (ours)" in markdown and "noop" in markdown
    table2 = markdown.split("### ")[1]
    ranks = [line.split("|")[1].strip() for line in table2.splitlines() if line.startswith("| ") and "Rank" not in line]
    ranked = [int(r) for r in ranks if r != "–"]
    assert ranked == sorted(ranked) and ranked[0] == 1 and ranks[: len(ranked)] == [str(r) for r in ranked]
    assert "Table 6" not in markdown and "Piper" not in markdown
    for fmt in ("csv", "latex", "rich"):
        assert "noop" in cli_out(runs_db, "leaderboard", "--format", fmt)
    page = tmp_path / "leaderboard.html"
    cli_out(runs_db, "leaderboard", "--format", "html", "--out", str(page))
    assert page.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.slow
def test_html_leaderboard_opens_in_headless_chromium(runs_db, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is installed by scripts/setup.sh with the dev extra"
    page = tmp_path / "leaderboard.html"
    cli_out(runs_db, "leaderboard", "--format", "html", "--out", str(page))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert '<tr class="ours">' in dom and '<tr class="published">' in dom and ">noop †<" in dom
    shot = tmp_path / "leaderboard.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1400,1800", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"leaderboard screenshot: {shot}")


@pytest.mark.slow
def test_partial_suite_cells_say_what_they_cover_in_every_format(runs_db):
    """runs_db holds 2 tasks of libero_object's 10, 2 trials each of the protocol's 50."""
    mark = "2/10 tasks, 2/50 trials"
    records = list(csv.DictReader(io.StringIO(cli_out(runs_db, "table", "libero_object", "--format", "csv"))))
    suite_cells = [r for r in records if r["kind"] == "ours" and r["task"] == ""]
    assert suite_cells and all(
        (r["tasks_covered"], r["tasks_total"], r["trials_per_task"], r["protocol_trials_per_task"], r["complete"])
        == ("2", "10", "2", "50", "False")
        for r in suite_cells
    )
    task_cells = [r for r in records if r["kind"] == "ours" and r["task"] == "0"]
    assert task_cells and all(r["complete"] == "False" and r["tasks_covered"] == "1" for r in task_cells)
    published = [r for r in records if r["kind"] == "published"]
    assert published and all(r["complete"] == "" for r in published)
    for fmt in ("markdown", "latex", "html", "rich"):
        text = cli_out(runs_db, "table", "libero_object", "--format", fmt)
        assert mark in text, fmt
        assert "not a suite score" in text or fmt == "html", fmt
    page = cli_out(runs_db, "table", "libero_object", "--format", "html")
    assert '<td class="partial" title="covers 2/10 tasks, 2/50 trials of the protocol' in page


@pytest.mark.slow
def test_partial_rows_are_unranked_and_never_averaged(runs_db):
    records = list(csv.DictReader(io.StringIO(cli_out(runs_db, "leaderboard", "--format", "csv"))))
    table2 = [r for r in records if r["table"] == "table2"]
    ours, published = [r for r in table2 if r["kind"] == "ours"], [r for r in table2 if r["kind"] == "published"]
    assert ours and all(r["rank"] == "" for r in ours)
    assert all(r["success_rate"] == "" for r in ours if r["column"] == "Avg")
    assert any(r["rank"] == "1" for r in published)


@pytest.mark.slow
def test_a_full_run_of_a_toy_suite_has_no_mark(tmp_path):
    """A one-task LIBERO suite of 2 trials, run in full: its cells cover the protocol and carry no mark."""
    import yaml

    family = yaml.safe_load((builtin_root() / "suites" / "libero.yaml").read_text())
    family.update(
        family="toy",
        groups={},
        suites={"libero_toy": {"benchmark": "libero_object", "n_tasks": 1, "label": "Toy", "max_steps": 5}},
    )
    family["protocol"]["trials_per_task"] = 2
    content = tmp_path / "content"
    (content / "suites").mkdir(parents=True)
    (content / "suites" / "toy.yaml").write_text(yaml.safe_dump(family))
    db, env = tmp_path / "toy.sqlite", {"QDEPTH_BENCH_CONTENT": str(content)}
    result = run_cli_subprocess(
        "run", "libero_toy", "--policy", "noop", "--workers", "1", "--db", str(db), cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    result = run_cli_subprocess("table", "libero_toy", "--format", "csv", "--db", str(db), cwd=tmp_path, env=env)
    ours = [r for r in csv.DictReader(io.StringIO(result.stdout)) if r["kind"] == "ours"]
    assert ours and all(r["complete"] == "True" and r["trials_per_task"] == "2" for r in ours)
    markdown = run_cli_subprocess(
        "table", "libero_toy", "--format", "markdown", "--db", str(db), cwd=tmp_path, env=env
    ).stdout
    assert "trials" not in markdown and "tasks," not in markdown and "not a suite score" not in markdown


def test_table6_from_the_paper_is_reproduced_exactly(tmp_path):
    db = tmp_path / "empty.sqlite"
    text = cli_out(db, "ablation", "table6", "--format", "csv")
    rows = {r["variant"]: r for r in csv.DictReader(io.StringIO(text))}
    expected = {  # Table 6 as printed: Carrot, Eggplant, Spoon, Block, Avg
        "QDepth-VLA (full)": (57.5, 95.0, 82.0, 39.6, 68.5, ""),
        "w/o Depth Loss": (47.9, 82.5, 89.2, 42.9, 65.6, -2.9),
        "w/o Depth Expert": (61.3, 89.6, 73.7, 15.8, 60.0, -8.5),
        "w/o Pixel Prediction": (54.6, 80.4, 82.0, 41.3, 64.6, -3.9),
        "w/o Hybrid Attn": (41.7, 89.6, 78.8, 42.0, 63.0, -5.5),
    }
    assert list(rows) == list(expected)
    for label, (*values, delta) in expected.items():
        row = rows[label]
        assert [float(row[c]) for c in ("Carrot", "Eggplant", "Spoon", "Block", "Avg")] == values
        assert row["delta"] == "0.0" if delta == "" else float(row["delta"]) == pytest.approx(delta, abs=1e-9)
    assert rows["w/o Depth Expert"]["Depth Expert"] == "False" and rows["w/o Depth Expert"]["Depth Loss"] == "True"
    assert rows["w/o Pixel Prediction"]["Latent Pred"] == "False"
    markdown = cli_out(db, "ablation", "table6", "--format", "markdown")
    assert "| w/o Depth Expert | ✓ | ✗ | ✓ | ✓ | 61.3 | 89.6 | 73.7 | 15.8 | 60.0 | -8.5 |" in markdown


@pytest.mark.slow
def test_ablation_from_real_runs_has_paired_tests(runs_db, tmp_path):
    content = tmp_path / "content"
    (content / "ablations").mkdir(parents=True)
    (content / "ablations" / "toy.yaml").write_text(
        "id: toy\ntitle: toy ablation\nsuite: libero_object\ncolumns: {T0: '0', T1: '1'}\n"
        "components: [Motion]\nfull: random\nvariants:\n"
        "  - {policy: random, label: random (full), removes: []}\n"
        "  - {policy: noop, label: no motion, removes: [Motion]}\n"
    )
    result = run_cli_subprocess(
        "ablation",
        "toy",
        "--format",
        "csv",
        "--db",
        str(runs_db),
        cwd=tmp_path,
        env={"QDEPTH_BENCH_CONTENT": str(content)},
    )
    assert result.returncode == 0, result.stderr
    rows = {r["variant"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert set(rows) == {"random (full)", "no motion"}
    assert rows["no motion"]["source"] == "ours" and rows["no motion"]["Motion"] == "False"
    assert 0.0 <= float(rows["no motion"]["p_value"]) <= 1.0 and "/" in rows["no motion"]["discordant"]
    assert rows["random (full)"]["p_value"] == ""


@pytest.mark.slow
def test_success_figure_is_written(runs_db, tmp_path):
    out = tmp_path / "fig" / "success.png"
    result = run_cli_subprocess(
        "figure", "success", "libero_object", "--out", str(out), "--db", str(runs_db), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_and_unknown_inputs_say_so(tmp_path):
    db = tmp_path / "empty.sqlite"
    cases = [  # (args, exit code, text in stderr)
        (["table"], 0, "no results in"),
        (["leaderboard", "--format", "markdown"], 0, "published rows only"),
        (["figure", "success", "libero_goal", "--out", str(tmp_path / "f.png")], 0, "no results for libero_goal"),
        (["table", "libero_object", "--policies", "nope"], 2, "no results for policy 'nope'"),
        (["ablation", "tabel6"], 2, "Did you mean 'table6'"),
        (["table", "libero_objekt"], 2, "unknown suite"),
    ]
    for args, code, text in cases:
        result = run_cli_subprocess(*args, "--db", str(db), cwd=tmp_path)
        assert result.returncode == code, (args, result.stderr)
        assert text in result.stderr, (args, result.stderr)
    assert not (tmp_path / "f.png").exists()


def test_measured_tiny_ablation_comes_from_the_shipped_checkpoints(tmp_path):
    """results/measured/libero-object-tiny.sqlite holds the evaluation behind docs/qdepth-vla.md's numbers: every
    episode of the standard protocol on the trained tasks, by exactly the checkpoints that ship, one run for
    each trained (variant, training seed) of the ablation."""
    from qdepth_bench.cli.ablation import policy_options
    from qdepth_bench.core.hashing import file_hash
    from qdepth_bench.registry.ablations import ablation_spec
    from qdepth_bench.registry.policies import make_policy
    from qdepth_bench.registry.suites import suite_registry

    db = Path(__file__).parents[1] / "results" / "measured" / "libero-object-tiny.sqlite"
    copy = tmp_path / db.name  # rendering loads reference rows into the database: leave the committed file alone
    shutil.copy(db, copy)
    spec = ablation_spec("libero-object-tiny")
    shipped = [m for m in spec.members() if m.weights is not None and m.weights.is_file()]
    assert {(m.variant.policy, m.seed) for m in shipped} >= {("qdepth", 0), ("pi0", 0), ("qdepth-causal", 0)}
    for member in shipped:
        runs = db_rows(
            copy,
            "select run_id, standard_protocol, policy_config, command, protocol_hash, policy_config_hash "
            "from runs where policy_name = ? and policy_checkpoint_hash = ?",
            (member.variant.policy, file_hash(member.weights)),
        )
        # a shipped checkpoint lands with its evaluation: exactly one standard run of it
        assert len(runs) == 1 and runs[0][1] == 1, (member.name, runs)
        run_id, _, config, command, protocol_hash, config_hash = runs[0]
        # the policy as the ablation builds it today has the recorded identity, so its runs resume these rows
        assert config_hash == make_policy(member.variant.policy, policy_options(spec, member)).identity().config_hash
        # recorded under the current LIBERO loop: a protocol version bump makes these numbers stale
        assert protocol_hash == suite_registry().suites["libero_object"].protocol_hash()
        # reproducible: each row ran through the model on its own (or one env worker sent one row per call)
        assert json.loads(config).get("batch_invariant") is True or "--workers 1" in command, (config, command)
        counts = db_rows(
            copy,
            "select task_id, count(*), min(episode_index), max(episode_index) from episodes "
            "where run_id = ? and status in ('success', 'failure') group by task_id",
            (run_id,),
        )
        assert counts == [(0, 50, 0, 49), (3, 50, 0, 49)], member.name
    result = run_cli_subprocess("ablation", "libero-object-tiny", "--format", "csv", "--db", str(copy), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = list(csv.DictReader(io.StringIO(result.stdout)))
    ours = {r["variant"]: r for r in records if r["source"] == "ours"}
    assert {r["variant"] for r in records if r["source"] == "published"} >= {"w/o Depth Loss", "w/o Hybrid Attn"}
    assert {v.label for v in spec.variants} == set(ours)  # every Table 6 model and open-pi0, from real runs
    assert ours["QDepth-VLA (full)"]["seeds"].startswith("0:18.0")
    for row in ours.values():  # the pooled average is the mean of the seeds' (equal episodes per seed)
        seeds = [float(part.split(":")[1]) for part in row["seeds"].split()]
        assert float(row["Avg"]) == pytest.approx(sum(seeds) / len(seeds), abs=1e-3), row
    assert 0.0 <= float(ours["open-pi0 (no depth branch)"]["p_value"]) <= 1.0

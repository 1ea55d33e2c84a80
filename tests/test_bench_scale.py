"""experiments/bench_scale.py: the world shape it asks for and its smoke run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import bench_scale  # noqa: E402


def test_world_shape_follows_the_issue() -> None:
    overrides = dict(o.split("=", 1) for o in bench_scale.overrides_for(3_000))
    assert overrides["dataset.synthetic.n_users"] == "1000"
    assert overrides["dataset.synthetic.n_items"] == "2000"  # items = 2 x users
    assert overrides["dataset.synthetic.n_communities"] == "40"  # one per 25 users
    assert overrides["world.n_routers"] == "40"
    assert overrides["dataset.synthetic.interactions_per_user"] == "10"
    assert overrides["propagation.update_size"] == "100"  # users / 10


def test_smoke_run_reports_time_memory_and_trace(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, str(bench_scale.__file__), "--smoke", "--out", str(out)],
        check=True,
        capture_output=True,
        env=env,
    )
    (row,) = json.loads(out.read_text())["rows"]["now"]
    assert row["status"] == "finished" and row["agents"] == 300
    assert row["train_interactions"] == row["interactions_done"] > 0
    assert row["ms_per_interaction"] > 0 and row["peak_rss_mb"] > 50
    assert row["trace_mb"] > 0 and row["message_rows"] > 0
    # initialisation apart from the steps: the per-step cost is the wall after step 0 over the
    # interactions of the later steps
    assert 0 < row["until_step0_seconds"] < row["wall_seconds"]
    assert row["steps_ms_per_interaction"] > 0


def test_step_times_read_the_childs_progress_lines() -> None:
    times = bench_scale.step_times("noise\nSTEP 0 1.500\nSTEP 1 2.25\nwarning: STEP x\nSTEP 2 3\n")
    assert times == {0: 1.5, 1: 2.25, 2: 3.0}
    # children now also say how many steps there are
    assert bench_scale.step_times("STEP 0 1.5 100\nSTEP 1 2.5 100\n") == {0: 1.5, 1: 2.5}
    assert bench_scale.step_report("STEP 4 9.25 100") == (4, 9.25, 100)
    assert bench_scale.step_report("STEP four 9 100") is None


def test_progress_line_says_where_a_size_is() -> None:
    line = bench_scale.progress_line(1_000_000, 1234.4, 5120.0, (36, 1200.0, 100))
    assert line == "  1,000,000 agents: step 37/100 done after 1,234 s, RSS 5,120 MB"
    building = bench_scale.progress_line(300_000, 60.0, 900.0, None)
    assert "building the world after 60 s" in building


def test_a_size_over_the_memory_cap_is_stopped_and_reported() -> None:
    # a cap below what any Python process holds: stopped at the first check, and said so
    row = bench_scale.measure(ROOT, 300, timeout=600.0, max_rss_mb=1.0)
    assert str(row["status"]).startswith("stopped after")
    assert "memory cap" in str(row["status"]) and "> 1 MB" in str(row["status"])
    assert "ndcg@10" not in row  # the child never finished


def test_memory_profile_reports_per_agent_bytes_at_both_checkpoints(tmp_path: Path) -> None:
    script = ROOT / "experiments" / "profile_scale.py"
    command = [sys.executable, str(script), "--agents", "300", "--memory", "--top", "3"]
    out = subprocess.run(
        [*command, "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    sections = [line for line in out.splitlines() if line.startswith("== ")]
    assert sections[0].startswith("== after the build: ")
    assert sections[-1].startswith("== after step")
    per_agent = [int(s.split(", ")[1].split(" B")[0].replace(",", "")) for s in sections]
    assert all(b > 0 for b in per_agent) and per_agent[-1] > per_agent[0]  # the run adds state
    assert out.count(" MB ") >= 3 * len(sections)  # the top lines under each heading

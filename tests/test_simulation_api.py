"""The Python API (``recnet.Simulation``) and ``recnet report`` on runs in every state.

A small synthetic world (a few seconds) is stepped through the API; the report is rendered while
the run is paused with its trace open for writing (WAL, read-only reader), after it was stopped
early, and in comparison mode; the CLI's ``report`` and ``simulate --report`` write the page.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recnet import Simulation, load_scenario
from recnet.cli.app import app
from recnet.errors import RecnetError, TraceError
from recnet.report import render_report, write_report
from recnet.runner import simulate

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "dataset.synthetic.n_users=30",
    "dataset.synthetic.n_items=60",
    "dataset.synthetic.n_communities=3",
    "dataset.synthetic.interactions_per_user=8",
    "world.n_routers=4",
    "propagation.update_size=20",
    "evaluation.n_negatives=9",
]


def small(tmp_path: Path, name: str, *extra: str):
    return load_scenario(
        ROOT / "scenarios" / "synthetic.yaml", [*SMALL, f"trace.path={tmp_path / name}", *extra]
    )


def status_of(trace: Path) -> tuple[str, int]:
    with sqlite3.connect(trace) as db:
        return db.execute("SELECT status, last_completed_step FROM runs").fetchone()


def test_step_inspect_and_finish_gives_the_same_run_as_simulate(tmp_path: Path) -> None:
    whole = asyncio.run(simulate(small(tmp_path, "whole.sqlite")))

    sim = Simulation(small(tmp_path, "stepped.sqlite"))
    assert len(sim.world.routers) == 4 and sim.steps_done == 0
    assert sim.step() == 1
    world = sim.world  # between steps: agents, routers, buffers and rules can be looked at
    assert world.step == 0
    assert sum(world.member_count(r) for r in world.routers) >= len(world.clients)
    assert all(u.filters.rules for u in world.users.values())
    assert sum(u.interactions for u in world.users.values()) == 20  # one batch learned
    early = sim.metrics()
    assert early["training"]["steps_done"] == 1.0
    assert 0.0 <= early["training"]["choice_accuracy"] <= 1.0
    assert set(early["recnet"]) >= {"ndcg@10", "hr@10", "mrr"}
    assert sim.run(steps=2) is None and sim.steps_done == 3
    status, last = status_of(tmp_path / "stepped.sqlite")
    assert (status, last) == ("running", 2)
    result = sim.run()
    assert result is not None and sim.finished
    assert sim.steps_done == sim.n_steps == whole.n_steps
    assert result.metrics == whole.metrics == sim.metrics()
    assert status_of(tmp_path / "stepped.sqlite")[0] == "finished"
    with pytest.raises(RecnetError, match="finished"):
        sim.step()


async def test_async_form_inside_a_running_loop(tmp_path: Path) -> None:
    """As in Jupyter: a loop is running. The async form runs on it; the sync form works there
    too (on the simulation's own loop thread); mixing the two on one simulation is refused."""
    async with Simulation(small(tmp_path, "async.sqlite")) as sim:
        assert await sim.astep() == 1
        with pytest.raises(RecnetError, match="other form"):
            sim.step()
        assert await sim.astep() == 2
        result = await sim.arun()
    assert result is not None and result.metrics["recnet"]["ndcg@10"] > 0

    synchronous = Simulation(small(tmp_path, "sync-in-loop.sqlite"))
    assert synchronous.step() == 1  # no "asyncio.run() cannot be called from a running loop"
    assert synchronous.run() is not None
    assert synchronous.metrics() == result.metrics  # same scenario and seed, same run
    synchronous.close()


def test_report_while_running_and_after_an_early_stop(tmp_path: Path) -> None:
    trace = tmp_path / "paused.sqlite"
    sim = Simulation(small(tmp_path, "paused.sqlite"))
    sim.run(steps=3)
    # the writer still has the trace open (WAL); the report reads it read-only
    html = render_report([trace])
    assert "running" in html
    assert re.search(r"steps done</td><td[^>]*>3<", html)
    assert 'data-empty="test-metrics"' in html  # not evaluated yet, and it says so
    assert html.count('<figure class="chart"') >= 5
    sim.close()
    assert status_of(trace) == ("stopped", 2)
    html = render_report([trace], agent="u:u01")
    assert "stopped early" in html and "Agent u:u01" in html


def test_comparison_overlays_two_runs_and_errors_are_one_line(tmp_path: Path) -> None:
    a = tmp_path / "a.sqlite"
    b = tmp_path / "b.sqlite"
    asyncio.run(simulate(small(tmp_path, "a.sqlite")))
    asyncio.run(simulate(small(tmp_path, "b.sqlite", "propagation.enabled=false")))
    html = render_report([a, b])
    assert "recnet comparison: a vs b" in html
    # each overlaid chart has a legend entry per run
    assert html.count(">a: choice accuracy") == 1 and html.count(">b: choice accuracy") == 1
    assert "a: recnet" in html and "b: popularity" in html
    with pytest.raises(TraceError, match="no trace file"):
        render_report([tmp_path / "missing.sqlite"])
    with pytest.raises(TraceError, match="no such agent"):
        render_report([a], agent="u:nobody")
    not_a_trace = tmp_path / "x.sqlite"
    not_a_trace.write_bytes(b"not a database at all" * 100)
    with pytest.raises(TraceError, match="not a recnet trace"):
        write_report([not_a_trace])


def test_cli_report_and_simulate_report(tmp_path: Path) -> None:
    runner = CliRunner()
    trace = tmp_path / "cli.sqlite"
    args = ["simulate", str(ROOT / "scenarios" / "synthetic.yaml"), "--quiet", "--report"]
    args += [a for o in SMALL for a in ("--set", o)]
    result = runner.invoke(app, [*args, "--trace", str(trace)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.html").is_file()
    assert f"report: {tmp_path / 'cli.html'}" in result.output.replace("\n", "")
    out = tmp_path / "sub" / "page.html"
    result = runner.invoke(app, ["report", str(trace), "-o", str(out), "--agent", "u:u02"])
    assert result.exit_code == 0, result.output
    assert "Agent u:u02" in out.read_text()
    result = runner.invoke(app, ["report", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 1
    assert "error: no trace file" in result.output


def test_readme_python_example_runs_as_a_script(tmp_path: Path) -> None:
    """The README's notebook-style example, run as a script from a folder with the scenarios."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "ndcg@10" in done.stdout
    assert (tmp_path / "runs" / "notebook.html").is_file()


def test_report_of_a_run_traced_at_the_aggregate_level(tmp_path: Path) -> None:
    """trace.messages=aggregate keeps no message rows: totals and multicasts come from the exact
    counts, and the page says what was not recorded."""
    trace = tmp_path / "aggregate.sqlite"
    asyncio.run(simulate(small(tmp_path, "aggregate.sqlite", "trace.messages=aggregate")))
    with sqlite3.connect(trace) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        multicasts = db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM message_counts GROUP BY step, router_id)"
        ).fetchone()[0]
    assert multicasts > 0
    html = render_report([trace])
    assert "trace.messages=aggregate" in html
    assert f"{multicasts} multicasts" in html  # the histogram's legend, from message_counts
    assert 'data-chart="messages"' in html  # per-step totals from the steps table

"""One writer per trace (issue 11, item 6): a second writer is refused with a line naming the
holder's pid; a lease left by a dead process (kill -9) is taken over."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

import recnet.phases.forward
from recnet.cli.app import app
from recnet.errors import TraceBusy
from recnet.trace.lease import TraceLease, lock_path

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "scenarios" / "synthetic.yaml"
SMALL = [
    "--set",
    "dataset.synthetic.n_users=30",
    "--set",
    "dataset.synthetic.n_items=60",
    "--set",
    "dataset.synthetic.interactions_per_user=8",
    "--set",
    "trace.checkpoint_every=1",
]
HOLDER = """
import sys
from pathlib import Path
from recnet.trace.lease import TraceLease
lease = TraceLease(Path(sys.argv[1])).acquire()
print("held", flush=True)
sys.stdin.read()  # hold it until the test closes stdin or kills this process
"""


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def hold(trace: Path) -> subprocess.Popen[str]:
    """Another process holding the trace's lease (the way a running `simulate` does)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(trace)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.fixture
def failed_trace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A trace whose run failed at step 1 (a planted bug), ready to resume."""
    real = recnet.phases.forward.ForwardPhase.perceive

    def perceive(self: Any, state: Any) -> None:
        if state.step == 1:
            raise RuntimeError("planted")
        real(self, state)

    monkeypatch.setattr(recnet.phases.forward.ForwardPhase, "perceive", perceive)
    trace = tmp_path / "run.sqlite"
    result = invoke("simulate", SYNTHETIC, *SMALL, "--trace", trace)
    assert result.exit_code == 1
    monkeypatch.setattr(recnet.phases.forward.ForwardPhase, "perceive", real)
    yield trace


def runs(trace: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(trace) as db:
        return db.execute("SELECT run_id, status FROM runs ORDER BY rowid").fetchall()


def test_a_second_writer_is_refused_naming_the_holder(failed_trace: Path) -> None:
    before = runs(failed_trace)
    holder = hold(failed_trace)
    try:
        for args in (["--resume", failed_trace], [SYNTHETIC, *SMALL, "--trace", failed_trace]):
            result = invoke("simulate", *args)
            assert result.exit_code == 1
            (line,) = result.stderr.strip().splitlines()
            assert line.startswith(f"error: trace {failed_trace} is being written by another run")
            assert f"(pid {holder.pid} on " in line and "one writer per trace" in line
            assert "trace so far" not in line
        assert runs(failed_trace) == before  # neither touched the trace
    finally:
        holder.kill()
        holder.wait()


def test_a_lease_left_by_a_killed_process_is_taken_over(failed_trace: Path) -> None:
    holder = hold(failed_trace)
    os.kill(holder.pid, signal.SIGKILL)  # kill -9: no clean-up ran
    holder.wait()
    stale = lock_path(failed_trace)
    assert f"pid {holder.pid}" in stale.read_text()  # the dead holder's lease is still there
    result = invoke("simulate", "--resume", failed_trace)
    assert result.exit_code == 0, result.output
    assert [status for _, status in runs(failed_trace)] == ["finished"]
    assert not stale.exists()  # released at the end of the run


def test_one_process_cannot_hold_two_leases_on_one_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.sqlite"
    with TraceLease(trace), pytest.raises(TraceBusy, match=rf"pid {os.getpid()} on"):
        TraceLease(trace).acquire()
    with TraceLease(trace) as again:  # released: free again
        assert again.held

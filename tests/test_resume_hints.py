"""Resume hints that work (issue 11, item 7), through the real ``openai`` client and a local
server: a budget stop prints the exact command, with the raised cap, that goes on; Ctrl-C (a
real SIGINT to a real process) exits 130 with the resume command and records ``interrupted``;
no coroutine is dropped when a stop cancels calls that had not started."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import llm_server
import pytest
import yaml
from click.testing import Result
from llm_responder import FakeLLM
from llm_server import LLMTestServer
from typer.testing import CliRunner

from recnet.cli.app import app
from recnet.llm.structured import run_concurrently

REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMTestServer]:
    # A stop cancels calls in flight, so the client drops connections: the server's thread
    # would print each reset to stderr, which CliRunner captures along with the CLI's own lines.
    monkeypatch.setattr(llm_server._Server, "handle_error", lambda *args: None)
    with LLMTestServer(responder=FakeLLM()) as running:
        yield running


def write_scenario(folder: Path, server: LLMTestServer, **llm: object) -> Path:
    raw = {
        "name": "hints",
        "seed": 2,
        "dataset": {
            "kind": "synthetic",
            "synthetic": {
                "n_users": 10,
                "n_items": 20,
                "n_communities": 2,
                "interactions_per_user": 5,
                "n_drifts": 0,
            },
        },
        "world": {"n_routers": 3, "min_routers": 1},
        "propagation": {"update_size": 8},
        "evaluation": {"n_negatives": 4},
        "llm": {
            "backend": "openai",
            "base_url": server.base_url,
            "api_key_env": "RECNET_TEST_UNSET_KEY",  # a local server: a dummy key
            "model": "test-model",
            "retry": {"max_attempts": 2, "initial_wait": 0.0, "jitter": 0.0, "timeout": 10},
            "cache": {"path": str(folder / "cache.sqlite")},
            **llm,
        },
    }
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_budget_stop_prints_the_command_that_goes_on(
    server: LLMTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    trace = tmp_path / "budget.sqlite"
    scenario = write_scenario(tmp_path, server, budget={"max_calls": 12})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("simulate", scenario, "--trace", trace, "-q")
        limits = [12]
        calls = [server.count()]
        for _ in range(8):  # follow the printed command until the run finishes
            if result.exit_code == 0:
                break
            assert result.exit_code == 1, result.output
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            line = result.stderr.strip()
            assert line.startswith("error: LLM budget reached:")
            command = line.split("resume with `", 1)[1].rstrip("`")
            limits.append(2 * limits[-1])
            assert shlex.split(command) == [
                "recnet", "simulate", "--resume", str(trace),
                "--set", f"llm.budget.max_calls={limits[-1]}",
            ]  # fmt: skip
            with sqlite3.connect(trace) as db:
                note = db.execute("SELECT note FROM runs").fetchone()[0]
            assert note.endswith(f"resume with `{command}`")
            result = invoke(*shlex.split(command)[1:], "-q")
            calls.append(server.count())
            assert calls[-1] > calls[-2]  # the resumed run went on; it did not stop at once
        assert result.exit_code == 0, result.output
        del result
        gc.collect()
    assert len(limits) >= 2  # it did stop on its budget at least once
    never_awaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert never_awaited == []


def test_ctrl_c_prints_the_resume_command_and_records_interrupted(
    tmp_path: Path, server: LLMTestServer
) -> None:
    server.set_latency(0.02)  # slow enough to be interrupted mid-run
    trace = tmp_path / "ctrl-c.sqlite"
    scenario = write_scenario(tmp_path, server, max_concurrency=1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "always"}
    process = subprocess.Popen(
        [sys.executable, "-m", "recnet.cli.app", "simulate", str(scenario), "--trace", str(trace),
         "-q"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if trace.exists() and _committed(trace) >= 1:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("interrupted at step ")
    assert lines[0].endswith(f"resume with `recnet simulate --resume {trace}`")
    with sqlite3.connect(trace) as db:
        status, note = db.execute("SELECT status, note FROM runs").fetchone()
    assert status == "stopped"
    assert note == lines[0]  # not "CancelledError()"
    resumed = invoke("simulate", "--resume", trace, "-q")
    assert resumed.exit_code == 0, resumed.output


def _committed(trace: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{trace}?mode=ro", uri=True)
        try:
            return db.execute("SELECT count(*) FROM steps").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_calls_cancelled_before_they_started_are_closed() -> None:
    """A stop (budget, Ctrl-C) cancels a batch whose calls were scheduled but not started;
    each such call is closed, so none is reported as 'never awaited'."""
    created = []

    async def call() -> None:
        await asyncio.sleep(30)

    async def batch() -> None:
        calls = [call() for _ in range(4)]
        created.extend(calls)
        await run_concurrently(calls, 4)

    async def main() -> None:
        task = asyncio.ensure_future(batch())
        await asyncio.sleep(0)  # the batch has scheduled its calls; none has started
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        states = [inspect.getcoroutinestate(c) for c in created]
        created.clear()
        gc.collect()
    assert states == ["CORO_CLOSED"] * 4
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []

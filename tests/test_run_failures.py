"""How runs end when something goes wrong (issue 11, items 3, 4 and 5).

- A step where no client changed (every answer off-schema, as from a server that ignores
  ``response_format``) is a normal step, through the real ``openai`` client and a local server.
- An unexpected error (a bug) ends with one ``error:`` line naming the step and phase, the trace
  and the resume command; the traceback goes into ``runs.note`` and a log file beside the trace.
- Every option's constraint is checked before the first step (``recnet validate`` fails).
- A failure in evaluation after the forward phase is resumable: evaluation reruns alone.
- An empty scenario file is refused with one line.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from llm_server import LLMTestServer
from typer.testing import CliRunner

import recnet.phases.forward
import recnet.trace.report
from recnet.cli.app import app
from recnet.config.loader import validate_scenario
from recnet.config.scenario import Scenario
from recnet.errors import RunFailed, ScenarioError
from recnet.runner import resume, simulate

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "scenarios" / "synthetic.yaml"
SMALL = [
    "--set",
    "dataset.synthetic.n_users=30",
    "--set",
    "dataset.synthetic.n_items=60",
    "--set",
    "dataset.synthetic.interactions_per_user=8",
]


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def stderr_lines(result: Result) -> list[str]:
    return result.stderr.strip().splitlines()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # default trace folders land here, never in the repository


# -- item 3: a step where nothing changed --------------------------------------------------------


@pytest.fixture
def off_schema_server() -> Iterator[LLMTestServer]:
    """A server whose every answer is JSON of the wrong shape (it ignores response_format)."""
    with LLMTestServer(responder=lambda _request: json.dumps({"answer": "whatever I like"})) as s:
        yield s


def off_schema_scenario(server: LLMTestServer, trace: Path) -> Scenario:
    return validate_scenario(
        {
            "name": "off-schema",
            "seed": 3,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {
                    "n_users": 10,
                    "n_items": 20,
                    "n_communities": 2,
                    "interactions_per_user": 4,
                    "n_drifts": 0,
                },
            },
            "world": {"n_routers": 3, "min_routers": 1},
            "propagation": {"update_size": 10},
            "evaluation": {"n_negatives": 4},
            "llm": {
                "backend": "openai",
                "base_url": server.base_url,
                "api_key_env": "RECNET_TEST_UNSET_KEY",  # a local server: a dummy key
                "model": "test-model",
                "max_repairs": 0,
                "retry": {"max_attempts": 1, "timeout": 10},
                "cache": {"enabled": False},
            },
            "trace": {"path": str(trace)},
        }
    )


def test_a_step_where_no_client_changed_is_an_ordinary_step(
    off_schema_server: LLMTestServer, tmp_path: Path
) -> None:
    trace = tmp_path / "off.sqlite"
    result = asyncio.run(simulate(off_schema_scenario(off_schema_server, trace)))
    assert off_schema_server.count() > 0  # the answers really came through the openai client
    with sqlite3.connect(trace) as db:
        status, note = db.execute("SELECT status, note FROM runs").fetchone()
        steps = db.execute("SELECT count(*) FROM steps").fetchone()[0]
        changed = db.execute(
            "SELECT count(*) FROM profile_versions WHERE step >= 0 AND kind = 'original'"
        ).fetchone()[0]
    assert (status, note) == ("finished", None)
    assert steps == result.n_steps >= 2
    assert changed == 0  # no profile changed in any step: every reflection fell back
    assert set(result.metrics) >= {"recnet", "popularity"}


# -- item 3: an unexpected error is one line, its traceback in the trace and a log ---------------


def test_a_bug_mid_run_is_one_line_naming_step_phase_trace_and_resume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_perceive = recnet.phases.forward.ForwardPhase.perceive

    def perceive(self: Any, state: Any) -> None:
        if state.step == 1:
            raise ZeroDivisionError("a bug planted in perceive")
        real_perceive(self, state)

    monkeypatch.setattr(recnet.phases.forward.ForwardPhase, "perceive", perceive)
    trace = tmp_path / "bug.sqlite"
    log = tmp_path / "bug.log"
    result = invoke("simulate", SYNTHETIC, *SMALL, "--set", "trace.checkpoint_every=1",
                    "--trace", trace)  # fmt: skip
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        "error: run failed at step 1 (perceive): ZeroDivisionError: a bug planted in perceive — "
        f"this is a bug in recnet; traceback in {log} and in runs.note of {trace}; "
        f"resume with `recnet simulate --resume {trace}`"
    ]
    assert "Traceback" not in result.output
    with sqlite3.connect(trace) as db:
        status, note = db.execute("SELECT status, note FROM runs").fetchone()
    assert status == "failed"
    assert note.startswith("failed at step 1 (perceive): ZeroDivisionError")
    assert "Traceback (most recent call last)" in note and "in perceive" in note
    logged = log.read_text()
    assert "failed at step 1 (perceive)" in logged and "ZeroDivisionError" in logged

    monkeypatch.setattr(recnet.phases.forward.ForwardPhase, "perceive", real_perceive)
    resumed = invoke("simulate", "--resume", trace)  # the printed command works
    assert resumed.exit_code == 0, resumed.output
    with sqlite3.connect(trace) as db:
        assert db.execute("SELECT status FROM runs").fetchone()[0] == "finished"


# -- item 4: every option checked before the first step ------------------------------------------

INVALID = [
    ("evaluation.ks=[0, -1]", "evaluation.ks.0: Input should be greater than or equal to 1"),
    ("evaluation.ks=[]", "evaluation.ks: List should have at least 1 item"),
    ("evaluation.ks=[5, 5]", "evaluation.ks: each value may appear once (repeated: 5)"),
    ("evaluation.baselines=[random, random]", "evaluation.baselines: each value may appear once"),
    ("seed=99999999999999999999", "seed: Input should be less than or equal to"),
    ("name=a/b", "name: must be a non-empty name without '/'"),
    ("name=' '", "name: must be a non-empty name"),
    ("interaction.popularity_weight=.inf", "popularity_weight: Input should be a finite number"),
    ("propagation.tau=.nan", "propagation.tau: Input should be a finite number"),
    ("world.filters.max_rules=2", "world.filters.max_rules: Input should be greater than or equal"),
    ("world.user_init=history", "user_init: history needs user_init_items >= 1"),
    ("world.user_init_items=3", "user_init_items=3 is used only with user_init: history"),
    ("world.buffer.flush_on=[full, full]", "world.buffer.flush_on: each value may appear once"),
    ("dataset.synthetic.n_communities=1", "n_drifts=2 needs n_communities >= 2"),
    ("dataset.synthetic.n_communities=300", "n_communities=300 exceeds n_users=200"),
    ("dataset.kind=recbole", "kind=recbole needs dataset.path"),
    ("dataset.name=''", "dataset.name: String should have at least 1 character"),
    ("llm.model=''", "llm.model: String should have at least 1 character"),
    ("llm.backend='mymodule:'", "llm.backend: a custom backend is written module.path:ClassName"),
    ("llm.budget.prices={m: [-1, 2]}", "llm.budget.prices: prices of 'm' must be >= 0"),
    ("embedder.api_key_env=sk-123", "embedder.api_key_env: must be an environment variable name"),
]


def test_validate_checks_a_cost_cap_has_a_price() -> None:
    priced = ["--set", "llm.backend=openai", "--set", "llm.budget.max_cost=1"]
    assert invoke("validate", SYNTHETIC, *priced).exit_code == 0  # gpt-4o-mini has a price
    result = invoke("validate", SYNTHETIC, *priced, "--set", "llm.model=my-local-model")
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        "error: llm.budget.max_cost is set but model 'my-local-model' has no price — add "
        "llm.budget.prices.my-local-model: [<USD per 1M input>, <USD per 1M output>]"
    ]


@pytest.mark.parametrize(("override", "expected"), INVALID, ids=[o for o, _ in INVALID])
def test_validate_checks_every_option(override: str, expected: str) -> None:
    result = invoke("validate", SYNTHETIC, "--set", override)
    assert result.exit_code == 1, result.output
    (line,) = stderr_lines(result)
    assert line.startswith("error: ") and expected in line
    assert not Path("runs").exists()


def test_a_key_pasted_as_a_variable_name_is_not_echoed() -> None:
    result = invoke("validate", SYNTHETIC, "--set", "llm.api_key_env=sk-secret-123")
    assert result.exit_code == 1
    assert "sk-secret-123" not in result.output


# -- item 4: a failure in evaluation is resumable ------------------------------------------------


def small_scenario(trace: Path) -> Scenario:
    return validate_scenario(
        {
            "name": "eval-fails",
            "seed": 4,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {"n_users": 20, "n_items": 40, "interactions_per_user": 6},
            },
            "world": {"n_routers": 4},
            "propagation": {"update_size": 10},
            "evaluation": {"n_negatives": 5},
            "trace": {"path": str(trace)},
        }
    )


def test_a_failure_in_evaluation_resumes_into_evaluation_alone(tmp_path: Path) -> None:
    reference = asyncio.run(simulate(small_scenario(tmp_path / "whole.sqlite")))
    trace = tmp_path / "cut.sqlite"
    scenario = small_scenario(trace)
    # A scenario an older recnet accepted: cut-offs the metrics cannot compute.
    scenario.evaluation.__dict__["ks"] = [0, -1]
    with pytest.raises(RunFailed) as failed:
        asyncio.run(simulate(scenario))
    last_step = reference.n_steps - 1
    assert (failed.value.step, failed.value.phase) == (reference.n_steps, "evaluate")
    assert f"resume with `recnet simulate --resume {trace}`" in str(failed.value)
    with sqlite3.connect(trace) as db:
        steps_before = db.execute("SELECT step, finished_at FROM steps ORDER BY step").fetchall()
    assert [s for s, _ in steps_before] == list(range(reference.n_steps))

    with pytest.raises(ScenarioError, match=r"evaluation\.ks\.0.*--set"):
        asyncio.run(resume(trace))  # the stored scenario says what to fix, and how
    resumed = asyncio.run(resume(trace, overrides=["evaluation.ks=[1, 5, 10]"]))
    assert resumed.metrics == reference.metrics
    with sqlite3.connect(trace) as db:
        steps_after = db.execute("SELECT step, finished_at FROM steps ORDER BY step").fetchall()
        status = db.execute("SELECT status FROM runs").fetchone()[0]
        metric_steps = {r[0] for r in db.execute("SELECT DISTINCT step FROM metrics")}
    assert steps_after == steps_before  # no forward step was run again
    assert status == "finished"
    assert metric_steps == {last_step + 1}


# -- item 5: an empty scenario file ----------------------------------------------------------------


EMPTY_FILES = {"empty": "", "newline": "\n", "comment": "# only a comment\n"}


@pytest.mark.parametrize("text", EMPTY_FILES.values(), ids=EMPTY_FILES.keys())
@pytest.mark.parametrize("command", ["validate", "simulate"])
def test_an_empty_scenario_file_is_refused_in_one_line(
    tmp_path: Path, text: str, command: str
) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    result = invoke(command, path)
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"error: {path}: the scenario file is empty — write at least a dataset section, e.g. "
        "start from scenarios/synthetic.yaml (every key: `recnet options`)"
    ]
    assert not Path("runs").exists()  # nothing was run or downloaded


def test_a_bug_in_any_command_is_one_line_and_a_log_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug planted in the runs report")

    monkeypatch.setattr(recnet.trace.report, "runs_table", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    trace = tmp_path / "t.sqlite"
    asyncio.run(simulate(small_scenario(trace)))
    result = invoke("traces", "runs", trace)
    assert result.exit_code == 1
    log = tmp_path / "recnet-error.log"
    assert stderr_lines(result) == [
        "error: unexpected KeyError: 'a bug planted in the runs report' — this is a bug in "
        f"recnet; traceback in {log}"
    ]
    assert "in broken" in log.read_text()

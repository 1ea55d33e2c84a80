"""Mass fallback is an error, not a counter (issue 11, item 2), and the replay cache's source
seen from a whole run (item 1), through ``simulate`` with the real ``openai`` client.

A run with fallbacks ends with a warning per operation and ``metrics.flag`` on its rows; a run
where one operation's fallback share passes ``llm.fallback.max_share`` stops like a budget stop
and resumes once the cause is fixed; a server that silently ignores ``response_format`` stops the
run instead of producing the reference policy's metrics under the model's name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_responder import FakeLLM
from llm_server import LLMTestServer
from rich.console import Console

from recnet.cli.display import show_result
from recnet.config.scenario import Scenario
from recnet.errors import BackendError, BudgetExceeded
from recnet.llm.fallbacks import FallbackLimitExceeded
from recnet.runner import resume, simulate
from recnet.trace import report
from recnet.trace.sqlite_store import SQLiteTraceStore

RETRY = {"max_attempts": 2, "initial_wait": 0.0, "max_wait": 0.01, "jitter": 0.0, "timeout": 5.0}


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(FakeLLM()) as running:
        yield running


def synthetic(base_url: str, **llm: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "fallback-synthetic",
            "seed": 5,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {
                    "n_users": 12,
                    "n_items": 24,
                    "n_communities": 3,
                    "interactions_per_user": 6,
                    "n_drifts": 0,
                },
            },
            "world": {"n_routers": 4},
            "propagation": {"update_size": 8, "max_recipients": 8},
            "evaluation": {"n_negatives": 5},
            "llm": {
                "backend": "openai",
                "base_url": base_url,
                "api_key_env": "RECNET_TEST_UNSET_KEY",
                "model": "test-model",
                "max_repairs": 1,
                "retry": RETRY,
                "cache": {"enabled": False},
                **llm,
            },
        }
    )


def flags(path: Path) -> dict[str, set[str | None]]:
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT model, flag FROM metrics").fetchall()
    out: dict[str, set[str | None]] = {}
    for model, flag in found:
        out.setdefault(model, set()).add(flag)
    return out


async def test_a_run_with_fallbacks_warns_per_operation_and_marks_its_metrics(
    server: LLMTestServer, tmp_path: Path
) -> None:
    server.set_responder(FakeLLM(stubborn_predicts=2))
    result = await simulate(synthetic(server.base_url), trace_path=tmp_path / "t.sqlite")
    stats = result.llm_stats
    assert stats is not None and stats.fallbacks == 2
    predicts = stats.answers_by_operation["predict"]
    assert stats.warnings() == [
        f"predict: 2 of {predicts} answers fell back to the reference policy ({2 / predicts:.0%})"
    ]
    assert flags(tmp_path / "t.sqlite") == {
        "recnet": {f"fallback: predict 2/{predicts}"},
        "popularity": {None},
        "random": {None},
    }
    console = Console(record=True, width=200)
    show_result(console, result)
    shown = console.export_text()
    assert f"warning: predict: 2 of {predicts} answers fell back" in shown
    assert "NOT the model's alone" in shown
    store = SQLiteTraceStore(tmp_path / "t.sqlite", read_only=True)
    caption = str(report.metrics_table(store, None).caption)  # what `recnet traces metrics` shows
    store.close()
    assert f"NOT the model's own answers · recnet: fallback: predict 2/{predicts}" in caption


async def test_a_clean_run_has_no_warning_and_no_flag(
    server: LLMTestServer, tmp_path: Path
) -> None:
    result = await simulate(synthetic(server.base_url), trace_path=tmp_path / "t.sqlite")
    assert result.llm_stats is not None and result.llm_stats.warnings() == []
    assert flags(tmp_path / "t.sqlite")["recnet"] == {None}


async def test_mass_fallback_stops_the_run_resumably(server: LLMTestServer, tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    server.set_responder(FakeLLM(skip_predicts=16, stubborn_predicts=10_000))
    scenario = synthetic(server.base_url, fallback={"window": 10, "min_calls": 10})
    with pytest.raises(FallbackLimitExceeded) as info:
        await simulate(scenario, trace_path=path)
    assert isinstance(info.value, BudgetExceeded)  # the runner's resumable stop
    assert "of the last 10 predict answers fell back" in info.value.message
    with sqlite3.connect(path) as db:
        status, last_step, note = db.execute(
            "SELECT status, last_completed_step, note FROM runs"
        ).fetchone()
    assert status == "stopped" and last_step >= 1 and "predict answers fell back" in note
    server.set_responder(FakeLLM())  # the cause is fixed
    result = await resume(path)
    stats = result.llm_stats
    assert stats is not None and stats.fallbacks == 0  # restored from the last checkpoint
    assert flags(path)["recnet"] == {None}


async def test_a_server_that_ignores_response_format_stops_the_run(
    server: LLMTestServer, tmp_path: Path
) -> None:
    server.set_ignores_response_format(True)  # 200s with prose instead of the schema's JSON
    with pytest.raises(FallbackLimitExceeded) as info:
        await simulate(
            synthetic(
                server.base_url,
                structured_output="json_schema",
                fallback={"window": 8, "min_calls": 8},  # judged within the first step
            ),
            trace_path=tmp_path / "t.sqlite",
        )
    assert "llm.structured_output: json_text" in info.value.message
    # The same server with the schema in the prompt answers well: a clean run.
    result = await simulate(
        synthetic(server.base_url, structured_output="json_text"),
        trace_path=tmp_path / "t2.sqlite",
    )
    assert result.llm_stats is not None and result.llm_stats.warnings() == []


async def test_a_recording_of_another_server_is_not_replayed_into_a_run(
    server: LLMTestServer, tmp_path: Path
) -> None:
    cache = {"enabled": True, "path": str(tmp_path / "llm-cache.sqlite")}
    recorded = await simulate(
        synthetic(server.base_url, cache=cache), trace_path=tmp_path / "a.sqlite"
    )
    assert recorded.llm_stats is not None and recorded.llm_stats.calls > 0
    dead = "http://127.0.0.1:9/v1"  # nothing listens there
    with pytest.raises(BackendError, match="could not connect"):
        await simulate(synthetic(dead, cache=cache), trace_path=tmp_path / "b.sqlite")
    replay_from = {**cache, "replay_from": f"openai@{server.base_url}"}
    replayed = await simulate(synthetic(dead, cache=replay_from), trace_path=tmp_path / "c.sqlite")
    stats = replayed.llm_stats
    assert stats is not None and stats.calls == 0 and stats.foreign_replays == stats.cache_hits
    assert replayed.metrics == recorded.metrics
    assert flags(tmp_path / "c.sqlite")["recnet"] == {
        f"replayed: {stats.foreign_replays} from openai@{server.base_url}"
    }

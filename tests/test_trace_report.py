"""Trace reports (rich tables rendered to text) and the `recnet traces` commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.table import Table
from rich.text import Text
from typer.testing import CliRunner

from recnet.cli.traces import traces_app
from recnet.errors import TraceError
from recnet.trace import report
from recnet.trace.memory_store import MemoryTraceStore
from recnet.trace.sqlite_store import SQLiteTraceStore
from recnet.trace.store import TraceStore


def _run(run_id: str, started: str, status: str, last: int) -> dict:
    return {
        "run_id": run_id,
        "name": f"movielens-{run_id}",
        "seed": 11 if run_id == "old" else 42,
        "scenario_json": "{}",
        "versions_json": "{}",
        "brain": "offline",
        "status": status,
        "started_at": started,
        "finished_at": "2026-02-01T10:05:00+00:00" if status == "finished" else None,
        "last_completed_step": last,
    }


def fill(store: TraceStore) -> None:
    """Two runs; the newer one ("new") holds the detailed history the reports show."""
    store.create_run(_run("old", "2026-02-01T10:00:00+00:00", "finished", 4))
    store.create_run(_run("new", "2026-03-01T09:00:00+00:00", "running", 1))
    rid = "new"
    store.add(
        "agents",
        [
            {"run_id": rid, "agent_id": "u:1", "kind": "user", "created_step": -1},
            {"run_id": rid, "agent_id": "u:2", "kind": "user", "created_step": -1},
            {
                "run_id": rid,
                "agent_id": "i:7",
                "kind": "item",
                "label": "Heat (1995)",
                "created_step": -1,
            },
            {"run_id": rid, "agent_id": "r:0", "kind": "router", "created_step": -1},
        ],
    )
    store.add(
        "profile_versions",
        [
            {
                "run_id": rid,
                "agent_id": "u:1",
                "step": -1,
                "kind": "original",
                "text": "enjoys heist thrillers",
                "attributes_json": "{}",
                "reason": "init",
            },
            {
                "run_id": rid,
                "agent_id": "u:1",
                "step": 1,
                "kind": "propagated",
                "text": "enjoys heist thrillers and " + "slow-burn noir " * 20,
                "attributes_json": "{}",
                "reason": "merge",
            },
            {
                "run_id": rid,
                "agent_id": "u:2",
                "step": 0,
                "kind": "original",
                "text": "SECRET-OTHER-USER",
                "attributes_json": "{}",
                "reason": "interact",
            },
        ],
    )
    store.add(
        "filter_rule_versions",
        [
            {
                "run_id": rid,
                "agent_id": "u:1",
                "rule_id": "min_relevance",
                "step": 1,
                "version": 2,
                "parent_version": 1,
                "position": 0,
                "text": "ignore signals below 0.07 relevance",
                "executable_json": '{"kind": "min_relevance", "threshold": 0.07}',
                "active": True,
                "reason": "optimize",
            }
        ],
    )
    messages = [
        ("r:0", "u:1", 0, 0.812, "accepted", "min_relevance", 0),
        ("r:0", "u:2", 0, 0.733, "rejected", "max_share", 0),
        ("r:0", "i:7", 0, 0.701, "buffered", None, None),
        ("r:0", "u:1", 1, 0.905, "accepted", "min_relevance", 1),
        ("r:0", "u:2", 1, 0.777, "accepted", "min_relevance", 1),
        ("r:0", "i:7", 1, 0.654, "dropped", "buffer_full", 1),
    ]
    store.add(
        "messages",
        [
            {
                "run_id": rid,
                "router_id": router,
                "client_id": client,
                "step": step,
                "score": score,
                "status": status,
                "rule_id": rule,
                "decided_step": decided,
            }
            for router, client, step, score, status, rule, decided in messages
        ],
    )
    store.add(
        "interactions",
        [
            {
                "run_id": rid,
                "seq": seq,
                "step": seq // 2,
                "user_id": user,
                "item_id": item,
                "negative_id": neg,
                "chosen_id": chosen,
                "correct": item == chosen,
            }
            for seq, (user, item, neg, chosen) in enumerate(
                [
                    ("u:1", "i:7", "i:3", "i:7"),
                    ("u:2", "i:5", "i:7", "i:7"),
                    ("u:1", "i:8", "i:9", "i:9"),
                ]
            )
        ],
    )
    store.add(
        "router_versions",
        [
            {
                "run_id": rid,
                "router_id": "r:0",
                "step": 0,
                "version": 1,
                "text": "crime and heist films",
                "attributes_json": "{}",
                "tau": 0.2,
                "n_members": 3,
                "reason": "init",
            }
        ],
    )
    store.add("steps", [_step(rid, 0), _step(rid, 1), _step(rid, 2)])
    metric_values = {
        (0, "recnet", "ndcg@10"): 0.30,
        (1, "recnet", "ndcg@10"): 0.52,
        (1, "recnet", "ndcg@1"): 0.21,
        (1, "recnet", "hr@5"): 0.60,
        (1, "recnet", "mrr"): 0.40,
        (1, "popularity", "ndcg@10"): 0.61,
        (1, "popularity", "ndcg@1"): 0.20,
        (1, "popularity", "hr@5"): 0.60,
        (1, "popularity", "mrr"): 0.45,
        (1, "random", "ndcg@10"): 0.21,
    }
    store.add(
        "metrics",
        [
            {
                "run_id": rid,
                "step": step,
                "split": "test",
                "model": model,
                "metric": metric,
                "value": value,
            }
            for (step, model, metric), value in metric_values.items()
        ],
    )
    store.add(
        "llm_calls",
        [
            {
                "run_id": rid,
                "step": 0,
                "operation": "extract",
                "agent_id": "u:1",
                "model": "qwen-32b",
                "messages_json": "[]",
                "parsed_ok": True,
                "tokens_in": 812,
                "tokens_out": 95,
                "latency_ms": 1234.4,
                "cache_hit": False,
                "attempts": 1,
                "created_at": "t",
            },
            {
                "run_id": rid,
                "step": 1,
                "operation": "merge",
                "agent_id": "i:7",
                "model": "qwen-32b",
                "messages_json": "[]",
                "parsed_ok": False,
                "tokens_in": 640,
                "tokens_out": 12,
                "latency_ms": 88.0,
                "cache_hit": True,
                "attempts": 3,
                "error": "invalid JSON: expected ',' at line 1",
                "created_at": "t",
            },
        ],
    )
    store.flush()


def _step(rid: str, step: int) -> dict:
    counts = dict.fromkeys(
        (
            "n_interactions",
            "n_correct",
            "n_changed_attributes",
            "n_routers_updated",
            "n_messages",
            "n_accepted",
            "n_rejected",
            "n_dropped",
        ),
        0,
    )
    return {"run_id": rid, "step": step, "started_at": "t", "finished_at": "t", **counts}


@pytest.fixture
def store() -> MemoryTraceStore:
    s = MemoryTraceStore()
    fill(s)
    return s


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def cells(line: str) -> list[str]:
    """The cells of one rendered table row."""
    return [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]


# -- runs -----------------------------------------------------------------------------------------


def test_runs_table_lists_every_run(store: MemoryTraceStore) -> None:
    text = report.render_text(report.runs_table(store))
    [old] = lines_with(text, "movielens-old")
    assert cells(old) == [
        "old",
        "movielens-old",
        "11",
        "offline",
        "finished",
        "4",
        "2026-02-01 10:00:00",
        "2026-02-01 10:05:00",
    ]
    [new] = lines_with(text, "movielens-new")
    assert cells(new)[:6] == ["new", "movielens-new", "42", "offline", "running", "1"]
    assert "2 run(s)" in text


def test_runs_table_on_empty_trace() -> None:
    assert "no runs" in report.render_text(report.runs_table(MemoryTraceStore()))


def test_run_resolution(store: MemoryTraceStore) -> None:
    assert report.resolve_run(store, None)["run_id"] == "new"  # the latest start
    assert report.resolve_run(store, "old")["seed"] == 11
    with pytest.raises(TraceError, match="no run 'gone'") as info:
        report.resolve_run(store, "gone")
    assert "new, old" in str(info.value)
    with pytest.raises(TraceError, match="no runs"):
        report.resolve_run(MemoryTraceStore(), None)


# -- agent history --------------------------------------------------------------------------------


def test_agent_history_of_a_user(store: MemoryTraceStore) -> None:
    table = report.agent_history_table(store, None, "u:1")
    text = report.render_text(table)
    assert "Agent u:1 (user)" in text
    assert "run new" in text
    [init] = lines_with(text, "enjoys heist thrillers")[:1]
    assert cells(init) == ["-1", "original", "init", "enjoys heist thrillers"]
    merged = lines_with(text, "propagated")[0]
    assert cells(merged)[:3] == ["1", "propagated", "merge"]
    assert "…" in text  # the long profile text is truncated
    assert "SECRET-OTHER-USER" not in text
    [rule] = lines_with(text, "min_relevance │ 2")
    assert cells(rule)[:6] == ["1", "min_relevance", "2", "0", "yes", "optimize"]
    received = [cells(line) for line in lines_with(text, "r:0") if "accepted" in line]
    assert received == [
        ["0", "r:0", "0.812", "accepted", "min_relevance", "0"],
        ["1", "r:0", "0.905", "accepted", "min_relevance", "1"],
    ]
    seqs = [cells(line)[0] for line in lines_with(text, "u:1 ") if "i:" in line]
    assert seqs == ["0", "2"]  # interactions of u:1 only
    assert "0.733" not in text  # a message to u:2


def test_agent_history_of_an_item_includes_interactions_as_negative(
    store: MemoryTraceStore,
) -> None:
    text = report.render_text(report.agent_history_table(store, "new", "i:7"))
    assert "Agent i:7 (item) — Heat (1995)" in text
    rows = [cells(line) for line in lines_with(text, "u:") if "i:7" in line]
    assert [r[0] for r in rows] == ["0", "1"]  # chosen in seq 0, the negative in seq 1
    assert ["1", "r:0", "0.654", "dropped", "buffer_full", "1"] in [
        cells(line) for line in lines_with(text, "dropped")
    ]


def test_agent_history_of_a_router(store: MemoryTraceStore) -> None:
    text = report.render_text(report.agent_history_table(store, "new", "r:0"))
    assert "crime and heist films" in text
    assert "6 message(s) sent" in text


def test_agent_history_limit_and_unknown_agent(store: MemoryTraceStore) -> None:
    text = report.render_text(report.agent_history_table(store, "new", "u:1", limit=1))
    assert "showing 1 of 2" in text
    with pytest.raises(TraceError, match="no agent 'u:404' in run 'new'") as info:
        report.agent_history_table(store, "new", "u:404")
    assert "u:1" in str(info.value)
    with pytest.raises(TraceError, match="no run"):
        report.agent_history_table(store, "gone", "u:1")


# -- one step -------------------------------------------------------------------------------------


def test_step_messages_table_lists_and_counts(store: MemoryTraceStore) -> None:
    text = report.render_text(report.step_messages_table(store, None, 1))
    rows = [cells(line) for line in lines_with(text, "r:0")]
    assert rows == [
        ["4", "r:0", "u:1", "0.905", "accepted", "min_relevance", "1"],
        ["5", "r:0", "u:2", "0.777", "accepted", "min_relevance", "1"],
        ["6", "r:0", "i:7", "0.654", "dropped", "buffer_full", "1"],
    ]
    assert "3 message(s): accepted 2 · dropped 1" in text

    text = report.render_text(report.step_messages_table(store, "new", 0, limit=1))
    assert len(lines_with(text, "r:0")) == 1
    assert "3 message(s) (showing 1): accepted 1 · rejected 1 · buffered 1" in text


def test_step_messages_empty_and_unknown_steps(store: MemoryTraceStore) -> None:
    text = report.render_text(report.step_messages_table(store, "new", 2))  # a step, no messages
    assert "0 message(s)" in text
    with pytest.raises(TraceError, match="no step 9") as info:
        report.step_messages_table(store, "new", 9)
    assert "0–2" in str(info.value)


# -- metrics --------------------------------------------------------------------------------------


def _column(table: Table, header: str) -> list[Text | str]:
    [column] = [c for c in table.columns if c.header == header]
    return list(column.cells)


def test_metrics_table_final_step_best_in_bold(store: MemoryTraceStore) -> None:
    table = report.metrics_table(store, None)
    assert [c.header for c in table.columns] == ["model", "ndcg@1", "ndcg@10", "hr@5", "mrr"]
    assert _column(table, "model") == ["recnet", "popularity", "random"]
    ndcg10 = _column(table, "ndcg@10")
    assert [str(c) for c in ndcg10] == ["0.5200", "0.6100", "0.2100"]
    assert [c.style for c in ndcg10 if isinstance(c, Text)] == ["", "bold", ""]
    hr5 = _column(table, "hr@5")
    assert [str(c) for c in hr5] == ["0.6000", "0.6000", "–"]
    assert [c.style for c in hr5 if isinstance(c, Text)] == ["bold", "bold"]  # a tie
    assert [c.style for c in _column(table, "ndcg@1") if isinstance(c, Text)] == ["bold", ""]
    text = report.render_text(table)
    assert "step 1" in text
    assert "test" in text


def test_metrics_table_other_step_and_errors(store: MemoryTraceStore) -> None:
    table = report.metrics_table(store, "new", step=0)
    assert [c.header for c in table.columns] == ["model", "ndcg@10"]
    assert [str(c) for c in _column(table, "ndcg@10")] == ["0.3000"]
    with pytest.raises(TraceError, match="no test metrics at step 5") as info:
        report.metrics_table(store, "new", step=5)
    assert "0, 1" in str(info.value)
    with pytest.raises(TraceError, match="no 'valid' metrics"):
        report.metrics_table(store, "new", split="valid")
    with pytest.raises(TraceError, match="no metrics yet"):
        report.metrics_table(store, "old")


# -- LLM calls ------------------------------------------------------------------------------------


def test_llm_calls_table(store: MemoryTraceStore) -> None:
    text = report.render_text(report.llm_calls_table(store, None, limit=10))
    [extract] = lines_with(text, "extract")
    assert cells(extract) == ["1", "0", "extract", "u:1", "qwen-32b", "812/95", "1234", "miss", "1"]
    [merge] = lines_with(text, "merge")
    assert cells(merge)[:9] == ["2", "1", "merge", "i:7", "qwen-32b", "640/12", "88", "hit", "3"]
    assert "invalid JSON" in merge
    assert "showing 2 of 2" in text
    text = report.render_text(report.llm_calls_table(store, "new", limit=1))
    assert "showing 1 of 2" in text
    assert "merge" not in text
    assert "no LLM calls" in report.render_text(report.llm_calls_table(store, "old"))


# -- CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "run.sqlite"
    with SQLiteTraceStore(path) as store:
        fill(store)
    return path


runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def test_cli_runs_and_reports(trace_file: Path) -> None:
    result = runner.invoke(traces_app, ["runs", str(trace_file)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "movielens-old" in result.output
    assert "movielens-new" in result.output

    result = runner.invoke(traces_app, ["agent", str(trace_file), "u:1", "--run", "new"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "enjoys heist thrillers" in result.output
    assert "0.905" in result.output

    result = runner.invoke(traces_app, ["messages", str(trace_file), "0", "--limit", "2"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "3 message(s) (showing 2): accepted 1 · rejected 1 · buffered 1" in result.output

    result = runner.invoke(traces_app, ["metrics", str(trace_file), "--step", "0"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "0.3000" in result.output
    assert "0.5200" not in result.output

    result = runner.invoke(traces_app, ["llm", str(trace_file), "--limit", "1"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "extract" in result.output
    assert "showing 1 of 2" in result.output


def test_cli_errors_are_trace_errors(trace_file: Path, tmp_path: Path) -> None:
    result = runner.invoke(traces_app, ["runs", str(tmp_path / "missing.sqlite")])
    assert isinstance(result.exception, TraceError)
    assert "does not exist" in str(result.exception)
    assert result.exit_code != 0

    result = runner.invoke(traces_app, ["agent", str(trace_file), "u:404"])
    assert isinstance(result.exception, TraceError)
    assert "u:1" in str(result.exception)  # lists some agents that exist

    result = runner.invoke(traces_app, ["llm", str(trace_file), "--run", "gone"])
    assert isinstance(result.exception, TraceError)
    assert "new, old" in str(result.exception)


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        ("runs", "List the runs"),
        ("agent", "one agent's history"),
        ("messages", "messages sent at STEP"),
        ("metrics", "Compare models"),
        ("llm", "List LLM calls"),
    ],
)
def test_cli_help(command: str, phrase: str) -> None:
    result = runner.invoke(traces_app, [command, "--help"], env=WIDE)
    assert result.exit_code == 0
    assert phrase in " ".join(result.output.split())


def test_cli_reads_while_a_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "live.sqlite"
    writer = SQLiteTraceStore(path)
    try:
        fill(writer)
        writer.add("messages", [{**_msg(2), "client_id": "u:2"}])  # buffered, not yet visible
        result = runner.invoke(traces_app, ["messages", str(path), "1"], env=WIDE)
        assert result.exit_code == 0, result.output
        assert "3 message(s)" in result.output
        writer.commit_step("new", 2)
        result = runner.invoke(traces_app, ["messages", str(path), "2"], env=WIDE)
        assert "1 message(s): buffered 1" in result.output
    finally:
        writer.close()


def _msg(step: int) -> dict:
    return {
        "run_id": "new",
        "router_id": "r:0",
        "client_id": "u:1",
        "step": step,
        "score": 0.5,
        "status": "buffered",
    }

"""The trace links its tables and answers the common questions (issue 11, item 9): foreign keys
are declared and hold on a real run; views say what a client received at a step and why, and
which rules and routers changed and why; every router has a label; a trace written before
(schema version 3) gains all of it when opened for writing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table, create_engine

from recnet.config.loader import validate_scenario
from recnet.runner import simulate
from recnet.trace import schema
from recnet.trace.sqlite_store import SQLiteTraceStore


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small offline run with the backward phase (so rules and routers change)."""
    path = tmp_path_factory.mktemp("links") / "run.sqlite"
    scenario = validate_scenario(
        {
            "name": "links",
            "seed": 1,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {"n_users": 40, "n_items": 80, "interactions_per_user": 10},
            },
            "world": {"n_routers": 6, "filters": {"min_relevance": 0.3}},  # some are rejected
            "propagation": {"update_size": 20},
            "backward": {
                "enabled": True,
                "every": 2,
                "select": "all",
                "epsilon": 1.0,
                "split_spread": 0.0,
            },
            "evaluation": {"n_negatives": 9},
            "trace": {"path": str(path)},
        }
    )
    asyncio.run(simulate(scenario))
    return path


def rows(path: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


def test_foreign_keys_are_declared_and_hold(trace: Path) -> None:
    tables = [name for (name,) in rows(trace, "SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        columns = {r[1] for r in rows(trace, f"PRAGMA table_info({table})")}
        links = {(r[2], r[3], r[4]) for r in rows(trace, f"PRAGMA foreign_key_list({table})")}
        if "run_id" in columns and table != "runs":
            assert ("runs", "run_id", "run_id") in links, table
    messages = {(r[2], r[3], r[4]) for r in rows(trace, "PRAGMA foreign_key_list(messages)")}
    assert {("agents", "client_id", "agent_id"), ("routers", "router_id", "router_id")} <= messages
    assert rows(trace, "PRAGMA foreign_key_check") == []  # every declared link holds


def test_every_router_has_a_label(trace: Path) -> None:
    labels = rows(trace, "SELECT agent_id, label, created_step FROM agents WHERE kind='router'")
    assert len(labels) >= 6
    assert [a for a, label, _ in labels if not label] == []
    assert any(step >= 0 for _, _, step in labels)  # routers made by split/merge are labelled too


def test_client_inbox_says_what_a_client_received_and_why(trace: Path) -> None:
    client, step, n = rows(
        trace,
        "SELECT client_id, step, count(*) FROM messages GROUP BY client_id, step "
        "ORDER BY count(*) DESC, client_id LIMIT 1",
    )[0]
    inbox = rows(
        trace,
        "SELECT router_id, router_label, router_profile, score, status, rule_id, rule_text "
        "FROM client_inbox WHERE client_id = ? AND step = ?",
        client,
        step,
    )
    assert len(inbox) == n
    for router_id, label, profile, _score, status, rule_id, rule_text in inbox:
        assert label and profile  # which router, and what it said at that step
        version_text = rows(
            trace,
            "SELECT text FROM router_versions WHERE router_id = ? AND step <= ? "
            "ORDER BY step DESC, version DESC LIMIT 1",
            router_id,
            step,
        )[0][0]
        assert profile == version_text
        assert status in {"accepted", "rejected", "dropped", "buffered"}
        if status == "rejected" and rule_id and rule_id.startswith("rule-"):
            assert rule_text  # why: the text of the rule that decided
    decided = rows(trace, "SELECT count(*) FROM client_inbox WHERE rule_text IS NOT NULL")[0][0]
    assert decided > 0


def test_module_changes_says_which_rules_and_routers_changed_and_why(trace: Path) -> None:
    changes = rows(
        trace, "SELECT module, target_id, step, reason, gradient_id, judgement FROM module_changes"
    )
    modules = {module for module, *_ in changes}
    assert "router" in modules
    expected = (
        rows(trace, "SELECT count(*) FROM router_versions WHERE step >= 0")[0][0]
        + rows(trace, "SELECT count(*) FROM filter_rule_versions WHERE step >= 0")[0][0]
    )
    assert len(changes) == expected
    optimised = [c for c in changes if c[4] is not None]
    assert optimised, "the backward phase changed nothing"
    assert all(c[5] in {"positive", "neutral", "negative"} for c in optimised)  # why: the gradient


def test_a_version_3_trace_gains_keys_and_views_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = MetaData()  # the tables as schema version 3 created them: no foreign keys
    for table in schema.metadata.sorted_tables:
        if table.name in {"schema_migrations", "runs", "agents", "messages", "checkpoints"}:
            Table(
                table.name,
                old,
                *[
                    Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                    for c in table.columns
                ],
            )
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        old.create_all(conn)
        for version, name in [(1, "initial"), (2, "backward_lineage"), (3, "checkpoints")]:
            conn.exec_driver_sql(
                "INSERT INTO schema_migrations VALUES (?, ?, '2026-01-01')", (version, name)
            )
        conn.exec_driver_sql(
            "INSERT INTO runs (run_id, name, seed, scenario_json, versions_json, brain, status, "
            "started_at, last_completed_step) VALUES ('r1', 'old', 0, '{}', '{}', 'offline', "
            "'finished', 'then', 3)"
        )
    engine.dispose()
    assert rows(path, "PRAGMA foreign_key_list(messages)") == []
    SQLiteTraceStore(path).close()
    assert rows(path, "SELECT run_id, last_completed_step FROM runs") == [("r1", 3)]
    assert rows(path, "PRAGMA foreign_key_list(messages)") != []
    views = {name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type='view'")}
    assert {"client_inbox", "module_changes"} <= views
    assert rows(path, "PRAGMA foreign_key_check") == []

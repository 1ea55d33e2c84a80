"""Integration tests of the forward phase on a small synthetic world (library API, SQLite trace)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from recnet.config.loader import apply_overrides, validate_scenario
from recnet.runner import RunResult, simulate

BASE: dict[str, Any] = {
    "seed": 11,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 40, "n_items": 80, "interactions_per_user": 10},
    },
    "world": {"n_routers": 5},
    "propagation": {"update_size": 16},
    "evaluation": {"n_negatives": 9},
}


def run(tmp_path: Path, name: str, *overrides: str) -> tuple[RunResult, sqlite3.Connection]:
    scenario = validate_scenario(apply_overrides(BASE, list(overrides)))
    path = tmp_path / f"{name}.sqlite"
    result = asyncio.run(simulate(scenario, trace_path=path))
    return result, sqlite3.connect(path)


def scalar(db: sqlite3.Connection, sql: str, *params: Any) -> Any:
    return db.execute(sql, params).fetchone()[0]


def test_propagation_sends_filters_and_merges(tmp_path: Path) -> None:
    result, db = run(tmp_path, "on")
    assert scalar(db, "SELECT count(*) FROM messages") > 0
    statuses = {r[0] for r in db.execute("SELECT DISTINCT status FROM messages")}
    assert "accepted" in statuses
    assert scalar(db, "SELECT count(*) FROM router_versions WHERE reason = 'integrate'") > 0
    merged = scalar(db, "SELECT count(*) FROM profile_versions WHERE kind = 'propagated'")
    assert merged > 0
    # every message decided by a rule names it; accepted ones name none
    assert (
        scalar(db, "SELECT count(*) FROM messages WHERE status='rejected' AND rule_id IS NULL") == 0
    )
    assert scalar(db, "SELECT count(*) FROM steps") == result.n_steps
    assert result.metrics["recnet"]["ndcg@10"] > result.metrics["random"]["ndcg@10"]


def test_propagation_off_sends_nothing(tmp_path: Path) -> None:
    result, db = run(tmp_path, "off", "propagation.enabled=false")
    assert scalar(db, "SELECT count(*) FROM messages") == 0
    assert scalar(db, "SELECT count(*) FROM router_versions WHERE reason = 'integrate'") == 0
    assert scalar(db, "SELECT count(*) FROM interactions") == result.n_train


def test_same_seed_same_run_other_seed_other_candidates(tmp_path: Path) -> None:
    first, db1 = run(tmp_path, "a")
    second, db2 = run(tmp_path, "b")
    assert first.metrics == second.metrics
    query = "SELECT split, user_id, position, item_id FROM candidates ORDER BY 1, 2, 3"
    assert db1.execute(query).fetchall() == db2.execute(query).fetchall()
    _, db3 = run(tmp_path, "c", "seed=12")
    assert db3.execute(query).fetchall() != db1.execute(query).fetchall()


def test_point_to_point_sends_from_clients_not_routers(tmp_path: Path) -> None:
    _, db = run(tmp_path, "p2p", "propagation.mode=point_to_point", "propagation.neighbours=3")
    senders = [r[0] for r in db.execute("SELECT DISTINCT router_id FROM messages")]
    assert senders and all(s.startswith(("u:", "i:")) for s in senders)


def test_without_filters_nothing_is_rejected(tmp_path: Path) -> None:
    _, db = run(tmp_path, "nofilter", "world.filters.enabled=false")
    assert scalar(db, "SELECT count(*) FROM messages WHERE status = 'rejected'") == 0
    assert scalar(db, "SELECT count(*) FROM messages WHERE status = 'accepted'") > 0


@pytest.mark.parametrize("flush_on", [["full"], ["before_act"]])
def test_flush_triggers_keep_messages_buffered_until_they_fire(
    tmp_path: Path, flush_on: list[str]
) -> None:
    # a buffer small enough to fill in this small world, so "full" fires
    _, db = run(
        tmp_path,
        f"flush-{flush_on[0]}",
        f"world.buffer.flush_on={flush_on}",
        "world.buffer.capacity=8",
    )
    buffered = scalar(db, "SELECT count(*) FROM messages WHERE status = 'buffered'")
    waited = scalar(
        db, "SELECT count(*) FROM messages WHERE status != 'buffered' AND decided_step > step"
    )
    # messages wait in buffers for their trigger (before_act: also the final evaluation, where
    # test users and their candidates act, so every buffer of an acting client is merged then)
    assert waited > 0
    if flush_on == ["full"]:
        assert buffered > 0


def test_lazy_merge_is_the_llm_default_and_merges_before_ranking(tmp_path: Path) -> None:
    from recnet.config.scenario import flush_triggers

    scenario = validate_scenario(apply_overrides(BASE, []))
    assert flush_triggers(scenario, "llm") == {"full", "before_act"}
    assert flush_triggers(scenario, "offline") == {"full", "before_act"}  # measured, issue 9
    chosen = validate_scenario(apply_overrides(BASE, ["world.buffer.flush_on=[full]"]))
    assert flush_triggers(chosen, "llm") == {"full"}
    _, db = run(tmp_path, "lazy", "world.buffer.flush_on=[full,before_act]")
    last = scalar(db, "SELECT max(step) FROM steps")
    # at evaluation (step last + 1) no test user keeps a buffered message: it merged them first
    assert scalar(db, "SELECT count(*) FROM messages WHERE decided_step = ?", last + 1) > 0
    assert (
        scalar(
            db,
            "SELECT count(*) FROM messages m JOIN candidates c ON c.run_id = m.run_id "
            "AND m.client_id = 'u:' || c.user_id WHERE m.status = 'buffered'",
        )
        == 0
    )


def test_message_rows_are_tuples_in_the_trace_insert_order() -> None:
    from recnet.phases.forward import message_row
    from recnet.trace.store import SPECS
    from recnet.world.buffer import RouterMessage

    columns = SPECS["messages"].insert_columns
    message = RouterMessage(
        message_id=1,
        router_id="r:2",
        client_id="u:3",
        step=4,
        score=0.1234567,
        attributes={},
        text="",
    )
    row = dict(zip(columns, message_row("run", message, "accepted", None, 5), strict=True))
    assert row == {
        "run_id": "run",
        "step": 4,
        "router_id": "r:2",
        "client_id": "u:3",
        "score": 0.123457,
        "status": "accepted",
        "rule_id": None,
        "decided_step": 5,
    }
    assert message_row("run", message, "buffered", None, 5)[-1] is None

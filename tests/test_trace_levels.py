"""Trace levels (``trace.messages``): what each level records, that it never changes the run, and
that ``recnet traces`` says what a level left out."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from recnet.cli.app import app
from recnet.config.loader import apply_overrides, validate_scenario
from recnet.runner import RunResult, simulate
from recnet.trace.levels import (
    AUTO_FULL_CLIENTS,
    MessageTrace,
    resolve_level,
    resolve_router_every,
)

BASE: dict[str, Any] = {
    "seed": 5,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 40, "n_items": 80, "interactions_per_user": 10},
    },
    "world": {"n_routers": 5},
    "propagation": {"update_size": 16},
    "evaluation": {"n_negatives": 9},
}
FATES = "SELECT decided_step, router_id, status, count(*) FROM messages GROUP BY 1, 2, 3"


def run(tmp_path: Path, level: str, *extra: str) -> tuple[RunResult, sqlite3.Connection, Path]:
    overrides = [f"trace.messages={level}", *extra]
    scenario = validate_scenario(apply_overrides(BASE, overrides))
    path = tmp_path / f"{level}.sqlite"
    result = asyncio.run(simulate(scenario, trace_path=path))
    return result, sqlite3.connect(path), path


def rows(db: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
    return db.execute(sql).fetchall()


def test_levels_record_what_they_say_and_change_nothing_else(tmp_path: Path) -> None:
    full, db_all, _ = run(tmp_path, "all")
    sampled, db_sampled, _ = run(tmp_path, "sampled", "trace.message_share=0.3")
    aggregate, db_aggregate, _ = run(tmp_path, "aggregate")
    none, db_none, _ = run(tmp_path, "none")
    # the run itself is the same at every level
    assert full.metrics == sampled.metrics == aggregate.metrics == none.metrics
    steps = "SELECT n_messages, n_accepted, n_rejected, n_dropped FROM steps ORDER BY step"
    assert rows(db_all, steps) == rows(db_sampled, steps) == rows(db_none, steps)
    # the level in force is stated in the run row
    stated = "SELECT trace_messages FROM runs"
    assert [r[0] for r in rows(db_all, stated)] == ["all"]
    assert [r[0] for r in rows(db_sampled, stated)] == ["sampled 0.3"]
    assert [r[0] for r in rows(db_aggregate, stated)] == ["aggregate"]
    # all: every message, no counts table needed
    every = rows(db_all, "SELECT step, router_id, client_id, status, decided_step FROM messages")
    assert len(every) > 100
    assert rows(db_all, "SELECT count(*) FROM message_counts") == [(0,)]
    # sampled: a subset of the full level's rows, about the share asked for
    some = rows(db_sampled, "SELECT step, router_id, client_id, status, decided_step FROM messages")
    assert set(some) < set(every)
    assert 0.2 * len(every) < len(some) < 0.4 * len(every)
    # sampled and aggregate: exact per (decided step, router, fate) counts
    exact = sorted(rows(db_all, FATES))
    counts = "SELECT step, router_id, status, n FROM message_counts"
    assert sorted(rows(db_sampled, counts)) == exact
    assert sorted(rows(db_aggregate, counts)) == exact
    assert rows(db_aggregate, "SELECT count(*) FROM messages") == [(0,)]
    # none: nothing at all
    assert rows(db_none, "SELECT count(*) FROM messages") == [(0,)]
    assert rows(db_none, "SELECT count(*) FROM message_counts") == [(0,)]


def test_traces_messages_says_what_a_level_did_not_record(tmp_path: Path) -> None:
    cli = CliRunner(env={"COLUMNS": "200"})
    _, _, aggregate = run(tmp_path, "aggregate")
    _, _, none = run(tmp_path, "none")
    _, _, sampled = run(tmp_path, "sampled", "trace.message_share=0.5")
    shown = cli.invoke(app, ["traces", "messages", str(aggregate), "2"])
    assert shown.exit_code == 0, shown.output
    assert "aggregate" in shown.output and "no message rows" in shown.output
    assert "accepted" in shown.output
    refused = cli.invoke(app, ["traces", "messages", str(none), "2"])
    assert refused.exit_code == 1
    assert "recorded no router messages" in refused.output
    assert "trace.messages=all" in refused.output
    partial = cli.invoke(app, ["traces", "messages", str(sampled), "2"])
    assert partial.exit_code == 0
    assert "sample" in partial.output


def test_auto_keeps_everything_in_small_worlds_and_samples_big_ones() -> None:
    assert resolve_level("auto", AUTO_FULL_CLIENTS) == "all"
    assert resolve_level("auto", AUTO_FULL_CLIENTS + 1) == "sampled"
    assert resolve_level("aggregate", 10**7) == "aggregate"
    with pytest.raises(ValueError, match=r"trace\.messages"):
        resolve_level("most", 10)


def test_sample_is_seeded_and_close_to_its_share() -> None:
    first = MessageTrace("sampled", 0.05, seed=1)
    again = MessageTrace("sampled", 0.05, seed=1)
    other = MessageTrace("sampled", 0.05, seed=2)
    ids = range(1, 200_001)
    kept = [i for i in ids if first.keep(i)]
    assert kept == [i for i in ids if again.keep(i)]
    assert kept != [i for i in ids if other.keep(i)]
    assert abs(len(kept) / 200_000 - 0.05) < 0.005


ROUTER_ROWS = (
    "SELECT router_id, step, version, reason, attributes_json, n_members FROM router_versions "
    "ORDER BY router_id, step"
)


def test_router_versions_on_a_cadence_keep_each_routers_newest_version(tmp_path: Path) -> None:
    every, _, _ = run(tmp_path, "all")
    cadenced, db_cadenced, _ = run(tmp_path, "aggregate", "trace.router_every=3")
    assert every.metrics == cadenced.metrics  # a trace setting never changes the run
    db_every = sqlite3.connect(tmp_path / "all.sqlite")
    full = rows(db_every, ROUTER_ROWS)
    kept = rows(db_cadenced, ROUTER_ROWS)
    n_steps = rows(db_every, "SELECT count(*) FROM steps")[0][0]
    integrate = [r for r in kept if r[3] == "integrate"]
    assert integrate and len(kept) < len(full)
    # integrate versions only at the cadence (and the last step), at most one per router and step
    assert {r[1] for r in integrate} <= {s for s in range(n_steps) if (s + 1) % 3 == 0} | {
        n_steps - 1
    }
    assert len({(r[0], r[1]) for r in integrate}) == len(integrate)
    # every router's newest version is in both traces, with the same profile
    newest = {r[0]: r[2:5] for r in full}
    assert {r[0]: r[2:5] for r in kept} == newest
    # the other reasons (initial versions here) are written as before
    assert [r for r in kept if r[3] != "integrate"] == [r for r in full if r[3] != "integrate"]


def test_router_cadence_follows_the_world_size() -> None:
    assert resolve_router_every(0, AUTO_FULL_CLIENTS, 10) == 1
    assert resolve_router_every(0, AUTO_FULL_CLIENTS + 1, 55) == 55
    assert resolve_router_every(4, 10, 55) == 4

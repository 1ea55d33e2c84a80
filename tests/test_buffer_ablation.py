"""The 'without buffer and filter' ablation: ``world.buffer.enabled: false`` merges every router
message on its own, in arrival order, while the default buffer merges a client's flushed messages
of a step together (even with ``capacity: 1``)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from recnet.brain.base import MergeOutcome, MergeTask
from recnet.brain.offline import OfflineBrain
from recnet.config.loader import apply_overrides, validate_scenario
from recnet.runner import RunResult, simulate

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.harness import ALL_MODELS  # noqa: E402

# Low τ, few routers and big steps, so that clients receive several messages per step and the
# two receptions can differ at all.
BASE: dict[str, Any] = {
    "seed": 11,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 40, "n_items": 80, "interactions_per_user": 10},
    },
    "world": {"n_routers": 10},
    "propagation": {"update_size": 40, "tau": 0.1, "membership_ratio": None},
    "evaluation": {"n_negatives": 9},
}
NO_BUFFER = "world.buffer.enabled=false"

MergeCall = list[tuple[str, list[int]]]  # per task: client id, message ids


def run(
    tmp_path: Path, name: str, *overrides: str, merges: list[MergeCall] | None = None
) -> tuple[RunResult, sqlite3.Connection]:
    """Simulate ``BASE`` with ``overrides``; with ``merges``, record every brain merge call."""
    scenario = validate_scenario(apply_overrides(BASE, list(overrides)))
    path = tmp_path / f"{name}.sqlite"
    if merges is None:
        result = asyncio.run(simulate(scenario, trace_path=path))
    else:
        with pytest.MonkeyPatch.context() as patch:
            inner = OfflineBrain.merge

            async def merge(self: OfflineBrain, tasks: Sequence[MergeTask]) -> list[MergeOutcome]:
                merges.append(
                    [(t.client.agent_id, [m.message_id for m in t.messages]) for t in tasks]
                )
                return await inner(self, tasks)

            patch.setattr(OfflineBrain, "merge", merge)
            result = asyncio.run(simulate(scenario, trace_path=path))
    return result, sqlite3.connect(path)


def scalar(db: sqlite3.Connection, sql: str) -> Any:
    return db.execute(sql).fetchone()[0]


def client_steps(db: sqlite3.Connection) -> int:
    """Distinct (decided step, client) pairs among the decided messages."""
    return scalar(
        db,
        "SELECT count(*) FROM (SELECT DISTINCT decided_step, client_id FROM messages "
        "WHERE status != 'buffered')",
    )


def test_default_and_capacity_one_merge_a_clients_step_at_once(tmp_path: Path) -> None:
    """Why ``buffer.capacity: 1`` was no ablation: flushes of a step still end in one merge
    (with the step's end as a flush trigger, as when it was measured)."""
    step_end = "world.buffer.flush_on=[full, before_act, step_end]"
    for name, overrides in (("default", ()), ("cap1", ("world.buffer.capacity=1",))):
        result, db = run(tmp_path, name, step_end, *overrides)
        n_messages = scalar(db, "SELECT count(*) FROM messages")
        assert result.operations["merge"] == client_steps(db) < n_messages, name


def test_without_buffer_every_message_is_its_own_merge_in_arrival_order(tmp_path: Path) -> None:
    calls: list[MergeCall] = []
    result, db = run(tmp_path, "nobuf", NO_BUFFER, merges=calls)
    tasks = [task for call in calls for task in call]
    assert all(len(ids) == 1 for _, ids in tasks)
    n_messages = scalar(db, "SELECT count(*) FROM messages")
    assert result.operations["merge"] == len(tasks) == n_messages
    assert n_messages == scalar(db, "SELECT sum(n_messages) FROM steps")
    assert scalar(db, "SELECT count(*) FROM messages WHERE status IN ('buffered', 'dropped')") == 0
    # clients really receive several messages in one step here, so there was something to split
    assert n_messages > client_steps(db)
    # one call never merges two messages of a client; each client's messages in arrival order
    assert all(len({client for client, _ in call}) == len(call) for call in calls)
    per_client: dict[str, list[int]] = {}
    for client, ids in tasks:
        per_client.setdefault(client, []).extend(ids)
    assert all(ids == sorted(ids) for ids in per_client.values())
    assert any(len(ids) > 1 for ids in per_client.values())


def test_without_buffer_and_filter_results_differ_from_buffered(tmp_path: Path) -> None:
    buffered, db_buffered = run(tmp_path, "buffered", "world.filters.enabled=false")
    unbuffered, db_unbuffered = run(
        tmp_path, "unbuffered", "world.filters.enabled=false", NO_BUFFER
    )
    query = (
        "SELECT agent_id, step, attributes_json FROM profile_versions "
        "WHERE kind = 'propagated' ORDER BY 1, 2"
    )
    assert db_buffered.execute(query).fetchall() != db_unbuffered.execute(query).fetchall()
    assert buffered.metrics["recnet"] != unbuffered.metrics["recnet"]
    assert scalar(db_unbuffered, "SELECT count(*) FROM messages WHERE status = 'rejected'") == 0


def test_buffer_is_on_by_default_and_explicit_true_changes_nothing(tmp_path: Path) -> None:
    assert validate_scenario(BASE).world.buffer.enabled is True
    default, db_default = run(tmp_path, "default")
    explicit, db_explicit = run(tmp_path, "explicit", "world.buffer.enabled=true")
    assert default.metrics == explicit.metrics and default.operations == explicit.operations
    query = "SELECT step, router_id, client_id, score, status, rule_id, decided_step FROM messages"
    assert db_default.execute(query).fetchall() == db_explicit.execute(query).fetchall()


def test_no_buffer_filter_variant_removes_buffer_and_filters() -> None:
    variant = ALL_MODELS["no-buffer-filter"]
    scenario = validate_scenario(apply_overrides(BASE, list(variant.overrides)))
    assert scenario.world.buffer.enabled is False
    assert scenario.world.filters.enabled is False

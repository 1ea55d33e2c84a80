"""End to end: the default ``min_relevance`` rule rejects off-profile messages (issue 9).

The rule compares the message's content (the router profile it carries) with the receiving
client's own profile; before issue 9 it compared the routing score, which routing already keeps
above tau, so the rule rejected nothing. A small default synthetic world must now see it reject.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from recnet.config.loader import apply_overrides, validate_scenario
from recnet.runner import simulate

SMALL: dict[str, Any] = {
    "seed": 7,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 60, "n_items": 120, "interactions_per_user": 10, "n_drifts": 2},
    },
    "world": {"n_routers": 6},
    "propagation": {"update_size": 10},
    "evaluation": {"n_negatives": 9},
}

BY_RULE = "SELECT count(*) FROM messages WHERE status = 'rejected' AND rule_id = ?"


def run(tmp_path: Path, name: str, *overrides: str) -> sqlite3.Connection:
    scenario = validate_scenario(apply_overrides(SMALL, list(overrides)))
    path = tmp_path / f"{name}.sqlite"
    asyncio.run(simulate(scenario, trace_path=path))
    return sqlite3.connect(path)


def test_default_run_rejects_off_profile_messages_by_min_relevance(tmp_path: Path) -> None:
    default = run(tmp_path, "default")
    rejected = default.execute(BY_RULE, ("rule-min_relevance",)).fetchone()[0]
    accepted = default.execute("SELECT count(*) FROM messages WHERE status = 'accepted'")
    assert rejected > 0
    assert accepted.fetchone()[0] > 0  # a filter, not a wall
    old = run(tmp_path, "routing_score", "world.filters.relevance=routing_score")
    assert old.execute(BY_RULE, ("rule-min_relevance",)).fetchone()[0] < rejected

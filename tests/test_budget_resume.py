"""A run stopped by its LLM budget, then resumed with a raised cap, ends with the same trace as an
uninterrupted run, apart from run ids, timestamps and the transport columns of ``llm_calls``
(latency, cache hit, network attempts): the calls of the interrupted step are answered from the
record/replay cache the second time, so they show ``cache_hit=1, attempts=0``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from llm_responder import FakeLLM

from recnet.config.loader import validate_scenario
from recnet.config.scenario import Scenario
from recnet.errors import BudgetExceeded, ScenarioError
from recnet.runner import resume, simulate

_FAKE = FakeLLM()


def answer(request: object) -> str:
    """Module-level responder for ``llm.options.responder`` (a deterministic fake LLM)."""
    return _FAKE.for_request(request)  # type: ignore[arg-type]


VOLATILE = {
    "run_id", "id", "started_at", "finished_at", "created_at", "note", "state",
    "latency_ms", "cache_hit", "attempts", "scenario_json",
}  # fmt: skip


BACKWARD = {"enabled": True, "every": 1, "select": "errors", "feedback": "step", "epsilon": 1.0}


def scenario(tmp: Path, max_calls: int | None, backward: bool = False) -> Scenario:
    return validate_scenario(
        {
            "name": "budget",
            "seed": 5,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {"n_users": 8, "n_items": 16, "interactions_per_user": 5},
            },
            "world": {"n_routers": 3},
            "propagation": {"update_size": 8},
            "evaluation": {"n_negatives": 4},
            "backward": BACKWARD if backward else {"enabled": False},
            "llm": {
                "backend": "scripted",
                "options": {"responder": "test_budget_resume:answer"},
                "budget": {"max_calls": max_calls},
                "cache": {"path": str(tmp / "cache.sqlite")},
            },
        }
    )


def comparable(path: Path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(path)
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    out: dict[str, list[tuple]] = {}
    for table in names:
        if table in {"schema_migrations", "checkpoints"}:
            continue
        cursor = db.execute(f"SELECT * FROM {table}")
        keep = [i for i, d in enumerate(cursor.description) if d[0] not in VOLATILE]
        out[table] = sorted(
            (tuple(row[i] for i in keep) for row in cursor), key=lambda r: tuple(map(str, r))
        )
    db.close()
    return out


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "with-backward"])
def test_budget_stop_then_resume_matches_an_uninterrupted_run(
    tmp_path: Path, backward: bool
) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir()
    cut.mkdir()
    reference = asyncio.run(
        simulate(scenario(whole, None, backward), trace_path=whole / "t.sqlite")
    )
    total_calls = reference.llm_stats.calls  # type: ignore[union-attr]
    assert total_calls > 20
    if backward:  # the LLM's gradient and optimize calls are part of the run
        assert reference.operations["gradient"] > 0 and reference.operations["optimize"] > 0

    capped = scenario(cut, total_calls // 2, backward)
    with pytest.raises(BudgetExceeded) as stopped:
        asyncio.run(simulate(capped, trace_path=cut / "t.sqlite"))
    assert "--resume" in str(stopped.value)
    db = sqlite3.connect(cut / "t.sqlite")
    status, note = db.execute("SELECT status, note FROM runs").fetchone()
    db.close()
    assert status == "stopped" and "resume" in note

    resumed = asyncio.run(
        resume(cut / "t.sqlite", overrides=[f"llm.budget.max_calls={2 * total_calls}"])
    )
    assert resumed.metrics == reference.metrics
    assert comparable(cut / "t.sqlite") == comparable(whole / "t.sqlite")
    # Nothing was paid twice: network calls of both parts add up to the uninterrupted run's.
    db = sqlite3.connect(cut / "t.sqlite")
    paid = db.execute("SELECT count(*) FROM llm_calls WHERE cache_hit = 0").fetchone()[0]
    db.close()
    assert paid <= total_calls


def test_resume_refuses_overrides_that_change_the_experiment(tmp_path: Path) -> None:
    capped = scenario(tmp_path, 5)
    with pytest.raises(BudgetExceeded):
        asyncio.run(simulate(capped, trace_path=tmp_path / "t.sqlite"))
    with pytest.raises(ScenarioError, match="keeps its scenario"):
        asyncio.run(resume(tmp_path / "t.sqlite", overrides=["llm.temperature=0.7"]))

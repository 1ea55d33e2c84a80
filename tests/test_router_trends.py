"""Router trends: what a router gained over its slow average, summed for a user, in its ranking."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_prequential import client

from recnet.brain.base import RankTask
from recnet.brain.offline import OfflineBrain
from recnet.config.loader import apply_overrides, validate_scenario
from recnet.eval.sparse_scorer import SparseProfileScorer
from recnet.runner import simulate
from recnet.world.agents import RouterAgent
from recnet.world.formulas import effective_profile
from recnet.world.profile import norm
from recnet.world.rules import FilterMemory
from recnet.world.trend import RouterTrends, with_trend
from recnet.world.world import World

BASE: dict[str, Any] = {
    "seed": 3,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {
            "n_users": 40,
            "n_items": 80,
            "n_communities": 4,
            "interactions_per_user": 12,
            "n_drifts": 2,
            "drift_spread_days": 10,
        },
    },
    "world": {"n_routers": 4},
    "propagation": {"update_size": 10},
    "evaluation": {"n_negatives": 9, "prequential": {"n_negatives": 9}},
}


def router(router_id: str, profile: dict[str, float]) -> RouterAgent:
    return RouterAgent(router_id=router_id, profile=profile, tau=0.3)


def test_a_trend_is_the_unit_gain_over_the_slow_average() -> None:
    trends = RouterTrends(rate=0.5, size=8)
    routers = {"r:0": router("r:0", {"a": 1.0}), "r:1": router("r:1", {"b": 1.0})}
    trends.advance(routers)
    assert trends.current == {}  # first sight: no trend yet
    assert trends.slow["r:0"] == {"a": 1.0}
    routers["r:0"] = router("r:0", {"a": 0.6, "c": 0.8})  # its members took up c
    trends.advance(routers)
    # only what rose counts (c from 0 to 0.8; a fell), at unit length
    assert trends.current == {"r:0": {"c": 1.0}}
    assert trends.slow["r:0"] == pytest.approx({"a": 0.8, "c": 0.4})
    trends.advance(routers)  # the slow average catches up: the gain shrinks, stays news
    assert trends.current["r:0"].keys() == {"c"}
    assert trends.slow["r:0"] == pytest.approx({"a": 0.7, "c": 0.6})
    del routers["r:1"]  # a router merged away leaves the trends
    trends.advance(routers)
    assert "r:1" not in trends.slow


def test_a_users_trend_is_the_unit_sum_of_its_routers_trends() -> None:
    trends = RouterTrends(rate=0.1, size=8)
    trends.current = {"r:0": {"x": 1.0}, "r:1": {"x": 0.6, "y": 0.8}}
    total = trends.of(["r:0", "r:1", "r:2"])  # r:2 has no trend
    assert total == pytest.approx(
        {"x": 1.6 / math.hypot(1.6, 0.8), "y": 0.8 / math.hypot(1.6, 0.8)}
    )
    assert trends.of(["r:2"]) == {}


def test_with_trend_adds_a_share_of_the_profiles_length() -> None:
    profile = {"a": 3.0, "b": 4.0}  # length 5
    got = with_trend(profile, {"b": 0.6, "c": 0.8}, 0.5)
    assert got == pytest.approx({"a": 3.0, "b": 4.0 + 0.5 * 5 * 0.6, "c": 0.5 * 5 * 0.8})
    assert with_trend({}, {"c": 1.0}, 0.5) == {}  # nothing to scale the trend by
    assert with_trend(profile, {}, 0.5) == profile
    assert with_trend(profile, {"c": 1.0}, 0.0) == profile


def test_prequential_rows_and_the_offline_rank_score_the_same_profile_with_trend() -> None:
    """Both ranking paths add the trend to the user's effective profile: the sparse scorer's
    scores equal the offline brain's ``rank`` with the trend in the task, and differ from
    the scores without it."""
    scenario = validate_scenario(apply_overrides(BASE, ["propagation.trend_share=0.8"]))
    brain = OfflineBrain(scenario)
    rng = np.random.default_rng(1)
    names = [f"genre:g{i}" for i in range(10)]

    def weights(n: int) -> dict[str, float]:
        return {names[i]: float(rng.random()) for i in rng.choice(10, n, replace=False)}

    users = [client(f"u:{k}", weights(4), weights(2)) for k in range(3)]
    items = [client(f"i:{k}", weights(3), weights(2)) for k in range(6)]
    trends = [{"genre:g1": 0.6, "genre:g7": 0.8}, {}, {"genre:g3": 1.0}]
    lists = [items[k : k + 4] for k in range(3)]
    pops = np.array([0.1 * j for j in range(12)])
    interaction = scenario.interaction
    scorer = SparseProfileScorer(interaction.propagated_weight, interaction.popularity_weight, 0.8)
    got = scorer.scores(users, lists, pops, trends)
    tasks = [
        RankTask(u, lst, pops[4 * k : 4 * k + 4].tolist(), t)
        for k, (u, lst, t) in enumerate(zip(users, lists, trends, strict=True))
    ]
    ranked = asyncio.run(brain.rank(tasks))
    without = scorer.scores(users, lists, pops, [{}, {}, {}])
    for k, outcome in enumerate(ranked):
        assert np.allclose(got[k], outcome.scores, atol=1e-12)
        assert np.array_equal(got[k], without[k]) == (not trends[k])
    # the user's row is rebuilt when its trend changes, though its profiles did not
    changed = scorer.scores(users[:1], lists[:1], pops[:4], [{"genre:g2": 1.0}])
    expected = with_trend(
        effective_profile(users[0].original, users[0].propagated, interaction.propagated_weight),
        {"genre:g2": 1.0},
        0.8,
    )
    assert norm(expected) > 0
    assert not np.array_equal(changed[0], got[0])


def run(tmp_path: Path, name: str, *overrides: str):
    scenario = validate_scenario(apply_overrides(BASE, list(overrides)))
    path = tmp_path / f"{name}.sqlite"
    return asyncio.run(simulate(scenario, trace_path=path)), path


def test_trends_change_rankings_only_where_propagation_runs(tmp_path: Path) -> None:
    """With propagation off there are no trends (a share or none, the same run); with it on, the
    trends move prequential ranks, and training itself (the users' choices; no backward phase
    here) is untouched."""
    off, _ = run(tmp_path, "off", "propagation.enabled=false")
    off_share, _ = run(
        tmp_path, "off_share", "propagation.enabled=false", "propagation.trend_share=0"
    )
    assert off.prequential.overall == off_share.prequential.overall
    on, on_path = run(tmp_path, "on", "propagation.trend_share=0.8")
    plain, plain_path = run(tmp_path, "plain", "propagation.trend_share=0")
    assert on.prequential.overall != plain.prequential.overall
    query = "select seq, rank from prequential order by seq"
    with sqlite3.connect(on_path) as a, sqlite3.connect(plain_path) as b:
        ranks_on, ranks_plain = a.execute(query).fetchall(), b.execute(query).fetchall()
        choices = "select step, user_id, correct from interactions order by seq"
        assert a.execute(choices).fetchall() == b.execute(choices).fetchall()
    assert len(ranks_on) == len(ranks_plain) > 0
    assert sum(x != y for x, y in zip(ranks_on, ranks_plain, strict=True)) > 0


def test_an_llm_brain_is_told_it_ranks_without_trends(caplog: pytest.LogCaptureFixture) -> None:
    """The LLM brain's rank does not read trends yet: a scenario that sets a share says so."""
    from recnet.context import RunContext
    from recnet.phases.forward import ForwardPhase
    from recnet.rng import SeedTree
    from recnet.trace.memory_store import MemoryTraceStore
    from recnet.world.embedding import AttributeSpace, HashingEmbedder

    def forward_warnings(share: float, ranks_by_formula: bool) -> list[str]:
        scenario = validate_scenario(apply_overrides(BASE, [f"propagation.trend_share={share}"]))
        brain = OfflineBrain(scenario)
        brain.ranks_by_formula = ranks_by_formula  # as an LLM brain: it ranks by calling a model
        world = World(AttributeSpace(HashingEmbedder(16)), FilterMemory(rules=()))
        ctx = RunContext(scenario, brain, MemoryTraceStore(), "run", SeedTree(0))
        caplog.clear()
        with caplog.at_level("WARNING", logger="recnet.phases.forward"):
            ForwardPhase(ctx, world)
        return [r.getMessage() for r in caplog.records]

    assert forward_warnings(0.8, ranks_by_formula=False) == [
        "propagation.trend_share: an LLM brain ranks without router trends"
    ]
    assert forward_warnings(0.8, ranks_by_formula=True) == []
    assert forward_warnings(0.0, ranks_by_formula=False) == []

"""Router trends: what a router gained over its slow average, summed for a user, in its ranking."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_prequential import client

from recnet.brain.base import RankTask
from recnet.brain.offline import OfflineBrain, rank_input
from recnet.brain.offline_work import score_one
from recnet.config.loader import apply_overrides, validate_scenario
from recnet.eval.sparse_scorer import SparseProfileScorer
from recnet.runner import simulate
from recnet.world.agents import RouterAgent
from recnet.world.formulas import effective_profile
from recnet.world.profile import norm
from recnet.world.trend import RouterTrends, with_trend

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


def test_the_row_scorer_and_the_per_user_formula_score_the_same_profile_with_trend() -> None:
    """The sparse row scorer (prequential evaluation and the offline brain's ``rank``) adds the
    trend to the user's effective profile as the per-user formula (``score_one`` of
    ``rank_input``) does: equal scores with the trend, different ones without it."""
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
    params = brain.score_params
    for k, (outcome, task) in enumerate(zip(ranked, tasks, strict=True)):
        user = task.user  # the per-user formula: the trend added to the effective profile
        effective = effective_profile(user.original, user.propagated, params.propagated_weight)
        work = rank_input(task.user, task.candidates, task.popularity)
        work = replace(work, user=(with_trend(effective, task.trend, 0.8), {}))
        assert np.allclose(got[k], score_one(params, work), atol=1e-12)
        assert np.array_equal(got[k], outcome.scores)  # the brain ranks from such a row store
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


async def test_an_llm_brain_is_shown_the_trend_when_it_ranks() -> None:
    """With a share, the rank prompt names the trend's strongest attributes (strongest first,
    at most ``TREND_ATTRIBUTES``) after the propagated profile; without one it is unchanged."""
    from recnet.brain.llm_text import TREND_ATTRIBUTES
    from tests.test_llm_brain import brain_with, by_operation, prompt, rank_task

    ranking = {"ranking": ["i:7", "i:3", "i:9"]}
    trend = {f"tag:t{k}": 1.0 - k / 20 for k in range(12)}
    texts = []
    for share in (0.8, 0.0):
        brain, backend, _ = brain_with(by_operation({"rank": lambda r: ranking}))
        brain.propagation = brain.propagation.model_copy(update={"trend_share": share})
        task = rank_task()
        task.trend = trend
        [outcome] = await brain.rank([task])
        assert outcome.ok
        texts.append(prompt(backend.requests[0]))
    shown, plain = texts
    named = ", ".join(f"tag t{k}" for k in range(TREND_ATTRIBUTES))
    assert f"Your communities have lately been moving toward: {named}." in shown
    assert f"tag t{TREND_ATTRIBUTES}" not in shown
    assert "moving toward" not in plain


def test_the_dry_run_prices_the_trend_named_in_rank_prompts() -> None:
    from recnet.dry_run import prompt_tokens
    from recnet.llm.pack import load_pack

    on, off = (
        validate_scenario(apply_overrides(BASE, [f"propagation.trend_share={share}"]))
        for share in (0.8, 0.0)
    )
    pack = load_pack(on.llm.pack)
    assert prompt_tokens(pack, "rank", on) > prompt_tokens(pack, "rank", off)
    assert prompt_tokens(pack, "predict", on) == prompt_tokens(pack, "predict", off)

"""Prequential (test-then-train) evaluation: candidates, scores, ranks and the trace."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recnet.eval.prequential as prequential
import recnet.eval.sparse_scorer as sparse_scorer
from recnet.brain.offline import OfflineBrain
from recnet.config.loader import apply_overrides, validate_scenario
from recnet.eval.prequential import (
    rank_with_ties_after,
    sample_unseen,
    summarize_prequential,
)
from recnet.eval.sparse_scorer import SparseProfileScorer
from recnet.runner import RunResult, simulate
from recnet.world.agents import ClientAgent
from recnet.world.buffer import MessageBuffer
from recnet.world.rules import FilterMemory

BASE: dict[str, Any] = {
    "seed": 5,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 30, "n_items": 60, "interactions_per_user": 8},
    },
    "world": {"n_routers": 4},
    "propagation": {"update_size": 12},
    "evaluation": {"n_negatives": 9, "prequential": {"n_negatives": 7, "windows": 3}},
}


def run(tmp_path: Path, name: str, *overrides: str) -> tuple[RunResult, sqlite3.Connection]:
    scenario = validate_scenario(apply_overrides(BASE, list(overrides)))
    path = tmp_path / f"{name}.sqlite"
    result = asyncio.run(simulate(scenario, trace_path=path))
    return result, sqlite3.connect(path)


def client(agent_id: str, original: dict[str, float], propagated: dict[str, float] | None = None):
    agent = ClientAgent(
        agent_id=agent_id,
        kind="user" if agent_id.startswith("u:") else "item",
        key=agent_id[2:],
        label=agent_id,
        original=original,
        buffer=MessageBuffer(4),
        filters=FilterMemory(rules=()),
    )
    agent.propagated = propagated or {}
    return agent


def test_vectorised_scores_equal_the_offline_brain() -> None:
    scenario = validate_scenario(BASE)
    brain = OfflineBrain(scenario)
    rng = np.random.default_rng(3)
    attributes = [f"genre:g{i}" for i in range(12)]

    def weights(n: int) -> dict[str, float]:
        chosen = rng.choice(len(attributes), n, replace=False)
        return {attributes[i]: float(rng.normal()) for i in chosen}

    users = [client(f"u:{k}", weights(5), weights(3)) for k in range(4)] + [client("u:empty", {})]
    items = [client(f"i:{k}", weights(4), weights(2) if k % 2 else None) for k in range(9)]
    items.append(client("i:empty", {}))
    scorer = SparseProfileScorer(
        scenario.interaction.propagated_weight, scenario.interaction.popularity_weight
    )
    lists = [[items[(u + j) % len(items)] for j in range(6)] for u in range(len(users))]
    pops = [[float(rng.random()) for _ in lst] for lst in lists]
    got = scorer.scores(users, lists, np.concatenate(pops))
    for user, lst, pop, scores in zip(users, lists, pops, got, strict=True):
        expected = brain._scores(user, lst, pop)
        assert np.allclose(scores, expected, atol=1e-12)
    # a profile replaced by an update is re-read, not served stale from the cache
    items[0].original = {"genre:g0": 1.0}
    users[0].original = {"genre:g0": 1.0}
    users[0].propagated = {}
    again = scorer.scores([users[0]], [[items[0]]], np.zeros(1))
    assert again[0][0] == pytest.approx(1.0)


def test_scoring_users_in_chunks_gives_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users are scored a bounded block at a time; blocks of one user give exactly the scores
    of one block of all."""
    rng = np.random.default_rng(4)
    attributes = [f"tag:t{i}" for i in range(30)]

    def weights(n: int) -> dict[str, float]:
        chosen = rng.choice(len(attributes), n, replace=False)
        return {attributes[i]: float(rng.normal()) for i in chosen}

    users = [client(f"u:{k}", weights(6), weights(2)) for k in range(7)]
    items = [client(f"i:{k}", weights(5)) for k in range(15)]
    lists = [[items[(3 * u + j) % len(items)] for j in range(8)] for u in range(len(users))]
    pops = [[float(rng.random()) for _ in lst] for lst in lists]
    pops = np.concatenate(pops)
    whole = SparseProfileScorer(2.0, 0.1).scores(users, lists, pops)
    monkeypatch.setattr(sparse_scorer, "SCORE_USERS", 1)  # one user per block
    chunked = SparseProfileScorer(2.0, 0.1).scores(users, lists, pops)
    assert len(chunked) == len(users)
    for a, b in zip(whole, chunked, strict=True):
        assert a.tobytes() == b.tobytes()


def test_scoring_memory_does_not_grow_with_the_attribute_count() -> None:
    """A million-agent world has ~5·10^5 attributes, mostly item titles, and its first step
    scores ~3·10^4 users: a dense users x attributes block (136 GB there) ended that run. The
    scorer's temporaries must follow the candidate entries, not the vocabulary."""
    n_items, per_item = 20_000, 5  # 100k distinct attributes, none shared
    items = [
        client(f"i:{k}", {f"title:{k}-{j}": 1.0 + j for j in range(per_item)})
        for k in range(n_items)
    ]
    users = [
        client(f"u:{k}", {f"title:{(7 * k) % n_items}-{j}": 1.0 for j in range(3)})
        for k in range(2000)
    ]
    lists = [[items[(7 * u + j) % n_items] for j in range(10)] for u in range(len(users))]
    pops = np.zeros(sum(len(lst) for lst in lists))
    scorer = SparseProfileScorer(2.0, 0.0)  # empty: the vocabulary grows while it scores
    tracemalloc.start()
    try:
        scores = scorer.scores(users, lists, pops)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # a dense block would be 2,000 x 100k x 8 B = 1.6 GB
    # the truth of each list is its first item (shares three attributes), the rest score 0
    assert all(s[0] > 0 and not s[1:].any() for s in scores)


def test_sample_unseen_is_distinct_and_avoids_seen() -> None:
    rng = np.random.default_rng(0)
    seen = {0, 1, 2, 5}
    chosen = sample_unseen(rng, 10, seen, 6)
    assert len(chosen) == 6 == len(set(chosen))
    assert not seen & set(chosen)
    assert len(sample_unseen(rng, 10, seen, 50)) == 6  # the catalogue runs out


def test_sample_unseen_draws_what_one_draw_at_a_time_would() -> None:
    """The candidates stored in every trace so far came from accepting the draws one by one;
    the vectorised first pass must pick the same items and leave the generator where it did."""

    def one_by_one(rng: np.random.Generator, n_items: int, seen: set[int], n: int) -> list[int]:
        n = min(n, max(n_items - len(seen), 0))
        chosen: list[int] = []
        taken: set[int] = set()
        while len(chosen) < n:
            for position in rng.integers(n_items, size=2 * (n - len(chosen)) + 4).tolist():
                if position in seen or position in taken:
                    continue
                taken.add(position)
                chosen.append(position)
                if len(chosen) == n:
                    break
        return chosen

    cases = np.random.default_rng(1)
    for trial in range(300):
        n_items = int(cases.integers(1, 60))
        seen = {int(p) for p in cases.integers(n_items, size=int(cases.integers(0, n_items + 1)))}
        n = int(cases.integers(0, 25))
        fast, slow = np.random.default_rng(trial), np.random.default_rng(trial)
        assert sample_unseen(fast, n_items, seen, n) == one_by_one(slow, n_items, seen, n)
        assert fast.integers(1 << 30) == slow.integers(1 << 30)  # same stream position


def test_ties_rank_the_truth_after_earlier_candidates_only() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1])
    assert rank_with_ties_after(scores, 2) == 3  # 0.9 and the earlier 0.5
    assert rank_with_ties_after(scores, 0) == 2
    assert rank_with_ties_after(scores, 4) == 5


def test_windows_split_the_stream() -> None:
    steps = np.array([0, 0, 1, 2, 3, 3])
    ranks = np.array([1, 2, 1, 3, 1, 1])
    summary = summarize_prequential(steps, ranks, [1], n_steps=4, n_windows=2)
    assert summary is not None
    assert summary.overall["hr@1"] == pytest.approx(4 / 6)
    assert [(a, b, n) for a, b, n, _ in summary.windows] == [(0, 1, 3), (2, 3, 3)]
    assert summary.windows[1][3]["hr@1"] == pytest.approx(2 / 3)
    assert summarize_prequential(steps[:0], ranks[:0], [1], 4, 2) is None


def test_run_ranks_every_interaction_before_learning_it(tmp_path: Path) -> None:
    result, db = run(tmp_path, "on")
    rows = db.execute(
        "SELECT p.seq, p.step, p.user_id, p.item_id, p.rank, p.n_candidates, p.candidates_json,"
        " i.item_id, i.step FROM prequential p JOIN interactions i USING (run_id, seq)"
    ).fetchall()
    assert len(rows) == result.n_train
    for _seq, step, _user, item, rank, n, candidates, learned_item, learned_step in rows:
        listed = json.loads(candidates)
        assert item == learned_item and step == learned_step
        assert n == len(listed) == 8 and listed.count(item) == 1 and 1 <= rank <= n
    seen = {}
    for user, item in db.execute("SELECT user_id, item_id FROM interactions"):
        seen.setdefault(user, set()).add(item)
    for user, candidates, item in db.execute(
        "SELECT user_id, candidates_json, item_id FROM prequential"
    ):
        assert not (set(json.loads(candidates)) - {item}) & seen[user]
    assert result.prequential is not None
    ranks = np.array([r[4] for r in rows])
    assert result.prequential.overall["ndcg@10"] == pytest.approx(
        float(np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0.0)))
    )
    stored = dict(
        db.execute(
            "SELECT metric, value FROM metrics WHERE split = 'prequential' AND model = 'recnet'"
        ).fetchall()
    )
    assert stored["ndcg@10"] == pytest.approx(result.prequential.overall["ndcg@10"])
    assert db.execute("SELECT count(DISTINCT step) FROM metrics WHERE split = 'prequential-window'")


def test_candidates_identical_across_variants_and_cadence(tmp_path: Path) -> None:
    _, on = run(tmp_path, "on")
    _, off = run(tmp_path, "off", "propagation.enabled=false")
    query = "SELECT seq, candidates_json FROM prequential ORDER BY seq"
    assert on.execute(query).fetchall() == off.execute(query).fetchall()
    result, sparse = run(tmp_path, "sparse", "evaluation.prequential.every=5")
    seqs = [r[0] for r in sparse.execute("SELECT seq FROM prequential ORDER BY seq")]
    assert seqs and all(s % 5 == 0 for s in seqs)
    result, none = run(tmp_path, "none", "evaluation.prequential.every=0")
    assert none.execute("SELECT count(*) FROM prequential").fetchone()[0] == 0
    assert result.prequential is None


def test_dry_run_prices_prequential_ranks_on_the_llm_cadence(tmp_path: Path) -> None:
    from recnet.dry_run import estimate

    scenario = validate_scenario(BASE)
    result = asyncio.run(simulate(scenario, trace_path=tmp_path / "dry.sqlite"))
    rows = {row.operation: row for row in estimate(scenario, result).operations}
    assert rows["rank (prequential)"].calls == -(-result.n_train // 25)
    assert rows["rank (prequential)"].prompt_tokens > 0
    scenario.evaluation.prequential.every = 0
    assert "rank (prequential)" not in {r.operation for r in estimate(scenario, result).operations}


def test_scorer_keeps_no_replaced_profile_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a cached row is current while it holds the very maps it was built from; the rows of
    # clients whose profiles were replaced are dropped, so they keep no old maps in memory
    from recnet.world.world import World

    evaluators: list[prequential.PrequentialEvaluator] = []
    clients: dict[str, ClientAgent] = {}
    evaluator_init, add_clients = prequential.PrequentialEvaluator.__init__, World.add_clients

    def remember_evaluator(self: prequential.PrequentialEvaluator, *args: Any, **kw: Any) -> None:
        evaluator_init(self, *args, **kw)
        evaluators.append(self)

    def remember_clients(self: World, agents: Any) -> None:
        agents = list(agents)
        clients.update((agent.agent_id, agent) for agent in agents)
        add_clients(self, agents)

    monkeypatch.setattr(prequential.PrequentialEvaluator, "__init__", remember_evaluator)
    monkeypatch.setattr(World, "add_clients", remember_clients)
    cached, stale = [], []

    def after_step(step: int, total: int) -> None:
        scorer = evaluators[-1].scorer
        rows = {
            agent_id: scorer._built_from[slot]
            for agent_id, slot in scorer._slot.items()
            if scorer._built_from[slot] is not None
        }
        cached.append(len(rows))
        stale.append(
            sum(
                original is not clients[agent_id].original
                or propagated is not clients[agent_id].propagated
                for agent_id, (original, propagated, _trend) in rows.items()
            )
        )

    scenario = validate_scenario(apply_overrides(BASE, []))
    asyncio.run(simulate(scenario, trace_path=tmp_path / "t.sqlite", on_step=after_step))
    assert len(cached) > 3 and max(cached) > 10  # rows are cached between steps
    assert stale == [0] * len(stale)

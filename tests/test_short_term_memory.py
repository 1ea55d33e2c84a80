"""A user's short-term memory: its last chosen items, kept in training, scored in its rankings."""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_prequential import client
from test_resume import comparable, stop_at

from recnet.brain.llm_text import with_recent_text
from recnet.config.loader import apply_overrides, validate_scenario
from recnet.dry_run import prompt_tokens
from recnet.errors import ScenarioError
from recnet.eval.sparse_scorer import SparseProfileScorer
from recnet.llm.pack import load_pack
from recnet.runner import RunResult, resume, simulate
from recnet.simulation import Simulation
from recnet.world.profile import cosine

BASE: dict[str, Any] = {
    "seed": 5,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 30, "n_items": 60, "interactions_per_user": 10, "n_drifts": 1},
    },
    "world": {"n_routers": 4},
    "propagation": {"update_size": 10},
    "evaluation": {"n_negatives": 9, "prequential": {"n_negatives": 9}},
}
REMEMBER = ("interaction.short_term_items=3", "interaction.short_term_weight=0.8")


def scenario(*overrides: str):
    return validate_scenario(apply_overrides(BASE, list(overrides)))


def run(tmp_path: Path, name: str, *overrides: str) -> tuple[RunResult, Path]:
    path = tmp_path / f"{name}.sqlite"
    return asyncio.run(simulate(scenario(*overrides), trace_path=path)), path


def random_agents(rng: np.random.Generator, prefix: str, n: int) -> list:
    attributes = [f"tag:t{i}" for i in range(30)]
    agents = []
    for k in range(n):
        chosen = rng.choice(len(attributes), int(rng.integers(1, 10)), replace=False)
        original = {attributes[i]: float(rng.normal()) for i in chosen}
        propagated = {attributes[i]: float(rng.random()) for i in chosen[:2]} if k % 2 else {}
        agents.append(client(f"{prefix}:{k}", original, propagated))
    return agents


def test_the_memory_adds_the_weighted_mean_cosine_with_the_remembered_items() -> None:
    """score = cos(user, item) + prior weight x prior + weight x mean over the remembered items
    of cos(remembered, item), with effective profiles; a user who remembers nothing gets the
    plain score."""
    rng = np.random.default_rng(2)
    users, items = random_agents(rng, "u", 4), random_agents(rng, "i", 40)
    lists = [items[k * 6 : k * 6 + 6] for k in range(4)]
    recent = [[items[30]], [items[31], items[32], items[33]], [], [items[0], items[34]]]
    priors = rng.random(24)
    scorer = SparseProfileScorer(0.5, 0.2, short_term_weight=0.8)
    got = scorer.scores(users, lists, priors, recent=recent)
    for u, (user, candidates) in enumerate(zip(users, lists, strict=True)):
        for c, item in enumerate(candidates):
            expected = cosine(user.effective(0.5), item.effective(0.5)) + 0.2 * priors[6 * u + c]
            if recent[u]:
                expected += 0.8 * np.mean(
                    [cosine(r.effective(0.5), item.effective(0.5)) for r in recent[u]]
                )
            assert got[u][c] == pytest.approx(expected, abs=1e-12)
    assert got[1].tolist() != scorer.scores(users, lists, priors)[1].tolist()


def test_without_weight_or_memory_the_scores_are_the_plain_ones_bit_for_bit() -> None:
    rng = np.random.default_rng(4)
    users, items = random_agents(rng, "u", 3), random_agents(rng, "i", 20)
    lists = [items[k * 5 : k * 5 + 5] for k in range(3)]
    priors = rng.random(15)
    plain = SparseProfileScorer(0.5, 0.2).scores(users, lists, priors)
    weightless = SparseProfileScorer(0.5, 0.2).scores(
        users, lists, priors, recent=[[items[19]]] * 3
    )
    forgetful = SparseProfileScorer(0.5, 0.2, short_term_weight=0.8).scores(
        users, lists, priors, recent=[[], [], []]
    )
    as_bytes = [s.tobytes() for s in plain]
    assert [s.tobytes() for s in weightless] == as_bytes
    assert [s.tobytes() for s in forgetful] == as_bytes


def test_a_user_remembers_its_last_training_choices_oldest_first(tmp_path: Path) -> None:
    """After the run each user's memory is its last ``short_term_items`` true items, in training
    order (the interactions table), and the memory survives a checkpoint's pickling."""
    with Simulation(scenario(*REMEMBER), trace_path=tmp_path / "t.sqlite") as sim:
        sim.run()
        users = dict(sim.world.users)
    with sqlite3.connect(tmp_path / "t.sqlite") as db:
        rows = db.execute("select user_id, item_id from interactions order by seq").fetchall()
    chosen: dict[str, list[str]] = {}
    for user_id, item_id in rows:
        chosen.setdefault(user_id, []).append(item_id)
    assert len(chosen) == len(users)
    for user_id, items in chosen.items():
        assert users[user_id].recent == tuple(items[-3:])
    user = next(iter(users.values()))
    assert pickle.loads(pickle.dumps(user)).recent == user.recent
    assert all(not item.recent for item in sim.world.items.values())


def test_the_memory_changes_rankings_not_training(tmp_path: Path) -> None:
    """With a weight, prequential ranks move; the users' choices in training do not.
    Remembering without a weight changes nothing the offline brain ranks."""
    on, on_path = run(tmp_path, "on", *REMEMBER)
    plain, plain_path = run(tmp_path, "plain")
    kept, _ = run(tmp_path, "kept", "interaction.short_term_items=3")
    assert kept.prequential.overall == plain.prequential.overall
    assert kept.metrics["recnet"] == plain.metrics["recnet"]
    assert on.prequential.overall != plain.prequential.overall
    with sqlite3.connect(on_path) as a, sqlite3.connect(plain_path) as b:
        choices = "select step, user_id, chosen_id, correct from interactions order by seq"
        assert a.execute(choices).fetchall() == b.execute(choices).fetchall()
        ranks = "select seq, rank from prequential order by seq"
        assert a.execute(ranks).fetchall() != b.execute(ranks).fetchall()


def test_resume_with_the_memory_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    config = scenario(
        *REMEMBER, "backward.enabled=true", "backward.every=2", "trace.checkpoint_every=1"
    )
    whole = tmp_path / "whole.sqlite"
    asyncio.run(simulate(config, trace_path=whole))
    cut = tmp_path / "cut.sqlite"
    stop_at(cut, 4, config)
    asyncio.run(resume(cut))
    assert comparable(cut) == comparable(whole)


def test_a_weight_without_a_memory_is_refused_naming_the_keys() -> None:
    with pytest.raises(ScenarioError, match=r"needs interaction\.short_term_items > 0"):
        scenario("interaction.short_term_weight=0.5")


def test_an_llm_brain_is_shown_the_remembered_items_newest_first() -> None:
    assert with_recent_text("likes noir", ["Old", "Newer", "Newest"]) == (
        "likes noir\nYou recently chose: Newest; Newer; Old."
    )
    assert with_recent_text("likes noir", []) == "likes noir"
    assert with_recent_text("", ["A"]) == "You recently chose: A."


async def test_the_llm_rank_prompt_names_the_remembered_items() -> None:
    from tests.test_llm_brain import brain_with, by_operation, prompt, rank_task

    ranking = {"ranking": ["i:7", "i:3", "i:9"]}
    brain, backend, _ = brain_with(by_operation({"rank": lambda r: ranking}))
    task = rank_task()
    task.recent = [task.candidates[1], task.candidates[0]]
    [outcome] = await brain.rank([task])
    assert outcome.ok
    labels = f"{task.candidates[0].label}; {task.candidates[1].label}"
    assert f"You recently chose: {labels}." in prompt(backend.requests[0])


def test_the_dry_run_prices_the_remembered_items_in_rank_prompts() -> None:
    on, off = scenario(*REMEMBER), scenario()
    pack = load_pack(on.llm.pack)
    assert prompt_tokens(pack, "rank", on) > prompt_tokens(pack, "rank", off)
    assert prompt_tokens(pack, "predict", on) == prompt_tokens(pack, "predict", off)


def test_an_llm_run_through_the_openai_client_names_the_remembered_titles(
    tmp_path: Path,
) -> None:
    """A whole LLM run (the real ``openai`` client, a local OpenAI-compatible server): rank
    prompts name users' last choices by their items' titles, at most two, and the run finishes."""
    from llm_responder import FakeLLM
    from llm_server import LLMTestServer
    from test_llm_e2e import synthetic

    with LLMTestServer() as server:
        server.set_responder(FakeLLM())
        scenario = synthetic(server)
        scenario.interaction.short_term_items = 2
        scenario.interaction.short_term_weight = 0.5
        with Simulation(scenario, trace_path=tmp_path / "llm.sqlite") as sim:
            result = sim.run()
            labels = {item.label for item in sim.world.items.values()}
        prompts = [str(r.body["messages"][-1]["content"]) for r in server.requests]
    assert result is not None and result.llm_stats is not None and result.llm_stats.calls > 0
    named = [
        line.removeprefix("You recently chose: ").removesuffix(".").split("; ")
        for prompt in prompts
        for line in prompt.splitlines()
        if line.startswith("You recently chose: ")
    ]
    assert named, "no rank prompt named a remembered item"
    assert all(1 <= len(titles) <= 2 and set(titles) <= labels for titles in named)

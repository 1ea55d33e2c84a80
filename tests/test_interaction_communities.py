"""The interaction_communities policies: Louvain communities of seen interactions become routers."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np

from recnet.config.loader import validate_scenario
from recnet.config.scenario import PropagationSettings
from recnet.runner import simulate
from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.buffer import MessageBuffer
from recnet.world.communities import (
    CommunityIndex,
    interaction_communities_perception,
    interaction_communities_routing,
    seen_interactions,
)
from recnet.world.embedding import AttributeSpace, HashingEmbedder
from recnet.world.rules import FilterMemory
from recnet.world.world import World

A_USERS = [f"u:a{k}" for k in range(5)]
B_USERS = [f"u:b{k}" for k in range(5)]
A_ITEMS = [f"i:a{k}" for k in range(4)]
B_ITEMS = [f"i:b{k}" for k in range(4)]


def two_camps() -> World:
    """Users a* chose items a*, users b* items b* (learned); ``history`` also holds the future:
    every b-user will choose every a-item, and an a-user will choose ``i:future``."""
    world = World(AttributeSpace(HashingEmbedder(64)), FilterMemory(rules=()))
    world.space.add(["x:a", "x:b"])

    def client(agent_id: str) -> ClientAgent:
        kind = "user" if agent_id.startswith("u:") else "item"
        profile = {"x:a": 1.0} if agent_id[2] == "a" else {"x:b": 1.0}
        return ClientAgent(
            agent_id, kind, agent_id[2:], agent_id, profile, MessageBuffer(4), world.default_filters
        )

    world.add_clients([client(c) for c in [*A_USERS, *B_USERS, *A_ITEMS, *B_ITEMS, "i:future"]])
    world.add_router(RouterAgent("r:0", {"x:a": 1.0}, tau=0.5))
    world.add_router(RouterAgent("r:1", {"x:b": 1.0}, tau=0.5))
    world.add_router(RouterAgent("r:2", {"x:a": 0.5, "x:b": 0.5}, tau=0.5))
    world.update_memberships()
    for users, items in ((A_USERS, A_ITEMS), (B_USERS, B_ITEMS)):
        for user in users:
            for item in items:
                world.record_interaction(user, item, 0)
                world.users[user].interactions += 1
                world.history.setdefault(user, set()).add(item)
    for user in B_USERS:  # the future: known to the dataset, not yet learned
        world.history[user].update(A_ITEMS)
    world.history[A_USERS[0]].add("i:future")
    return world


def index_for(world: World, seed: int = 0) -> CommunityIndex:
    index = CommunityIndex(seed, PropagationSettings(community_every=1, update_size=1))
    world.communities = index
    index.refresh(world)
    return index


def test_communities_are_built_from_learned_interactions_only() -> None:
    world = two_camps()
    learned = {
        (u, i) for us, its in ((A_USERS, A_ITEMS), (B_USERS, B_ITEMS)) for u in us for i in its
    }
    assert set(seen_interactions(world)) == learned
    index = index_for(world)
    # Had the future leaked (b-users choosing a-items), the camps would share items and merge.
    a, b = index.community[A_USERS[0]], index.community[B_USERS[0]]
    assert a != b
    assert {index.community[c] for c in A_USERS + A_ITEMS} == {a}
    assert {index.community[c] for c in B_USERS + B_ITEMS} == {b}
    assert "i:future" not in index.community  # chosen only in the future: in no community
    # each camp has a router of its own, matched by content, and reaches only its members
    assert index.router_of[a] == "r:0" and index.router_of[b] == "r:1"
    scores = np.zeros(len(world.clients), dtype=np.float32)
    settings = PropagationSettings()
    positions, _ = interaction_communities_routing(world, "r:0", scores, 0.5, settings)
    reached = {world.clients[p].agent_id for p in positions.tolist()}
    assert reached == set(A_USERS + A_ITEMS)
    routed = interaction_communities_perception(world, {B_USERS[1]: {"x:c": 0.4}})
    assert routed == {"r:1": {"x:c": 0.4}}


def test_a_learned_interaction_moves_into_the_graph_at_the_next_rebuild() -> None:
    world = two_camps()
    index = index_for(world)
    assert "i:future" not in index.community and index.builds == 1
    world.record_interaction(A_USERS[0], "i:future", 1)
    world.users[A_USERS[0]].interactions += 1
    index.refresh(world)  # community_every = 1 step of 1 interaction: rebuilt
    assert index.builds == 2 and index.community["i:future"] == index.community[A_USERS[0]]


def random_world(seed: int) -> World:
    world = two_camps()
    rng = np.random.default_rng(seed)
    items = A_ITEMS + B_ITEMS
    for user in A_USERS + B_USERS:
        for item in rng.choice(items, 3, replace=False).tolist():
            world.record_interaction(user, item, 0)
            world.users[user].interactions += 1
    return world


def test_communities_are_deterministic_for_a_seed() -> None:
    first = index_for(random_world(1), seed=5)
    second = index_for(random_world(1), seed=5)
    assert first.communities == second.communities and first.router_of == second.router_of
    assert len(first.communities) >= 2


def tiny(tmp_path: Path, name: str) -> dict[str, object]:
    return {
        "name": name,
        "seed": 2,
        "dataset": {
            "kind": "synthetic",
            "synthetic": {
                "n_users": 30,
                "n_items": 60,
                "n_communities": 3,
                "interactions_per_user": 8,
            },
        },
        "world": {"n_routers": 4},
        "propagation": {
            "update_size": 15,
            "perception": "interaction_communities",
            "routing": "interaction_communities",
            "community_every": 2,
        },
        "trace": {"path": str(tmp_path / f"{name}.sqlite")},
    }


def test_the_policies_run_end_to_end_and_deterministically(tmp_path: Path) -> None:
    runs = []
    for name in ("one", "two"):
        result = asyncio.run(simulate(validate_scenario(tiny(tmp_path, name))))
        assert "ndcg@10" in result.metrics["recnet"]
        db = sqlite3.connect(result.trace_path)
        messages = db.execute(
            "SELECT step, router_id, client_id, status FROM messages ORDER BY id"
        ).fetchall()
        db.close()
        runs.append((result.metrics["recnet"], messages))
    assert runs[0][1], "no router message was sent"
    assert runs[0] == runs[1]

"""Perception and multicast policies: community (membership) routing, delta messages, and never
messaging clients that cannot act."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from recnet.config.loader import apply_overrides, validate_scenario
from recnet.data.types import Interaction
from recnet.runner import simulate
from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.buffer import MessageBuffer
from recnet.world.embedding import AttributeSpace, HashingEmbedder
from recnet.world.policies import (
    FOREVER,
    acts_until,
    excluded_mask,
    members_only,
    members_routing,
    membership_perception,
    nearest_router_perception,
)
from recnet.world.rules import FilterMemory
from recnet.world.world import World


def small_world() -> World:
    """Two communities (a-attributes, b-attributes), a router each, and a user with no profile."""
    world = World(AttributeSpace(HashingEmbedder(64)), FilterMemory(rules=()))
    world.space.add(["x:a1", "x:a2", "x:b1", "x:b2"])

    def client(agent_id: str, profile: dict[str, float]) -> ClientAgent:
        kind = "user" if agent_id.startswith("u:") else "item"
        return ClientAgent(
            agent_id, kind, agent_id[2:], agent_id, profile, MessageBuffer(4), world.default_filters
        )

    world.add_clients(
        [
            client("u:1", {"x:a1": 1.0, "x:a2": 0.5}),
            client("u:2", {"x:a1": 0.8, "x:a2": 0.9}),
            client("u:3", {"x:b1": 1.0, "x:b2": 0.4}),
            client("u:new", {}),
            client("i:a", {"x:a1": 1.0}),
            client("i:b", {"x:b2": 1.0}),
            client("i:idle", {"x:b1": 1.0}),
        ]
    )
    world.add_router(RouterAgent("r:0", {"x:a1": 0.7, "x:a2": 0.7}, tau=0.6))
    world.add_router(RouterAgent("r:1", {"x:b1": 0.7, "x:b2": 0.7}, tau=0.6))
    world.update_memberships()
    return world


def test_membership_perception_routes_a_change_to_the_changers_communities() -> None:
    world = small_world()
    assert set(world.memberships["u:1"]) == {"r:0"}
    # u:1 starts liking b-attributes: the paper's rule sends the change to the b-router, the
    # membership rule to u:1's own (a) community
    change = {"u:1": {"x:b1": 0.4, "x:b2": 0.2}}
    assert set(nearest_router_perception(world, change)) == {"r:1"}
    routed = membership_perception(world, change)
    assert routed == {"r:0": {"x:b1": 0.4, "x:b2": 0.2}}
    router_vector = world.space.embed_many([world.routers["r:0"].profile])[0]
    cosines = world.client_vectors @ router_vector
    settings = validate_scenario({}).propagation
    positions, scores = members_routing(world, "r:0", cosines, 0.6, settings)
    reached = {world.clients[p].agent_id for p in positions.tolist()}
    assert {"u:1", "u:2", "i:a"} <= reached and "u:3" not in reached
    assert "u:new" not in reached  # an empty profile is nobody's member
    assert np.allclose(scores, cosines[positions])  # relevance of the message to each member
    cosines[world.client_position["u:2"]] = -np.inf  # a client that cannot act is skipped
    again, _ = members_routing(world, "r:0", cosines, 0.6, settings)
    assert world.client_position["u:2"] not in again.tolist()


def test_members_are_reached_strongest_first_up_to_the_cap() -> None:
    world = small_world()
    router_vector = world.space.embed_many([world.routers["r:0"].profile])[0]
    cosines = world.client_vectors @ router_vector

    def strongest_first(client_id: str) -> tuple[float, int]:
        return -world.routers_of(client_id)["r:0"], world.client_position[client_id]

    expected = sorted(world.members("r:0"), key=strongest_first)
    settings = validate_scenario({"propagation": {"max_recipients": 2}}).propagation
    positions, _ = members_routing(world, "r:0", cosines, 0.6, settings)
    assert [world.clients[p].agent_id for p in positions.tolist()] == expected[:2]


def test_membership_perception_follows_router_creation_order() -> None:
    world = small_world()
    # u:1 joins r:1, then its r:0 edge is re-made: its own edges now list r:1 first
    world.set_membership("u:1", "r:1", 0.9)
    score = world.routers_of("u:1")["r:0"]
    world.remove_membership("u:1", "r:0")
    world.set_membership("u:1", "r:0", score)
    assert list(world.routers_of("u:1")) == ["r:1", "r:0"]
    routed = membership_perception(world, {"u:1": {"x:a1": 0.1}})
    assert list(routed) == ["r:0", "r:1"]


def test_clients_that_cannot_act_are_excluded() -> None:
    world = small_world()
    train = [Interaction("1", "a", 1), Interaction("3", "b", 2), Interaction("2", "a", 3)]
    world.acts_until = acts_until(world, train, [{"new": ["a", "b"]}])
    position = world.client_position
    assert world.acts_until[position["i:idle"]] == -1
    assert world.acts_until[position["u:3"]] == 1
    assert world.acts_until[position["u:new"]] == FOREVER
    mask = excluded_mask(world, 2, idle=False, kinds=["user", "item"])
    assert mask is not None
    skipped = {world.clients[p].agent_id for p in np.flatnonzero(mask).tolist()}
    assert skipped == {"i:idle", "u:1", "u:3"}  # never chosen; nothing left and no test list
    assert excluded_mask(world, 2, idle=True, kinds=["user", "item"]) is None
    users_only = excluded_mask(world, 0, idle=True, kinds=["user"])
    assert users_only is not None
    assert {world.clients[p].kind for p in np.flatnonzero(users_only).tolist()} == {"item"}


BASE: dict[str, Any] = {
    "seed": 3,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 40, "n_items": 200, "interactions_per_user": 8, "n_drifts": 2},
    },
    "world": {"n_routers": 6},
    "propagation": {"update_size": 10},
    "evaluation": {"n_negatives": 9},
}


def run(tmp_path: Path, name: str, *overrides: str) -> sqlite3.Connection:
    scenario = validate_scenario(apply_overrides(BASE, list(overrides)))
    path = tmp_path / f"{name}.sqlite"
    asyncio.run(simulate(scenario, trace_path=path))
    return sqlite3.connect(path)


def test_no_message_reaches_an_item_that_cannot_act(tmp_path: Path) -> None:
    idle_items = """
        SELECT count(*) FROM messages m WHERE m.client_id LIKE 'i:%'
        AND m.client_id NOT IN (SELECT item_id FROM interactions)
        AND substr(m.client_id, 3) NOT IN (SELECT item_id FROM candidates)"""
    default = run(tmp_path, "default")
    assert default.execute(idle_items).fetchone()[0] == 0
    assert default.execute("SELECT count(*) FROM messages").fetchone()[0] > 0
    asked = run(tmp_path, "asked", "propagation.message_idle_clients=true")
    assert asked.execute(idle_items).fetchone()[0] > 0


def test_community_routing_reaches_members_with_what_changed(tmp_path: Path) -> None:
    db = run(
        tmp_path,
        "community",
        "propagation.perception=membership",
        "propagation.routing=members",
        "propagation.message=delta",
        "propagation.multicast_kinds=[user]",
    )
    kinds = {r[0][:2] for r in db.execute("SELECT DISTINCT client_id FROM messages")}
    assert kinds == {"u:"}
    assert db.execute("SELECT count(*) FROM messages WHERE status = 'accepted'").fetchone()[0]
    merged = db.execute("SELECT count(*) FROM profile_versions WHERE kind = 'propagated'")
    assert merged.fetchone()[0] > 0


def test_members_only_picks_what_members_routing_picks_without_scoring_everyone() -> None:
    world = small_world()
    settings = validate_scenario({"propagation": {"max_recipients": 2}}).propagation
    vector = world.router_vector("r:0")
    cosines = world.client_vectors @ vector
    skipped = np.zeros(len(world.clients), dtype=bool)
    skipped[world.client_position["u:1"]] = True  # a client that cannot act
    cosines[skipped] = -np.inf
    dense, dense_scores = members_routing(world, "r:0", cosines, 0.6, settings)
    sparse, sparse_scores = members_only(world, "r:0", vector, skipped, settings)
    assert sparse.tolist() == dense.tolist() and len(sparse) == 2
    assert world.client_position["u:1"] not in sparse.tolist()
    assert np.allclose(sparse_scores, dense_scores, atol=1e-6)


def test_the_member_scoped_multicast_sends_the_same_messages_as_scoring_every_client(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The forward phase's shortcut for members routing changes no message: same recipients,
    order and fates as the full client x router score matrix (scores equal to float32 rounding)."""
    query = "SELECT step, router_id, client_id, status, rule_id, score FROM messages ORDER BY id"
    scoped = run(tmp_path, "scoped", "trace.messages=all").execute(query).fetchall()
    monkeypatch.delattr(members_routing, "members_only")  # back to scoring every client
    full = run(tmp_path, "full", "trace.messages=all").execute(query).fetchall()
    assert len(scoped) > 100
    assert [r[:5] for r in scoped] == [r[:5] for r in full]
    assert np.allclose([r[5] for r in scoped], [r[5] for r in full], atol=1e-5)

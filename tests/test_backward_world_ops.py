"""Router operations keep the graph's invariants; a snapshot restores the world exactly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from recnet.config.scenario import FilterSettings
from recnet.world import router_ops
from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.buffer import MessageBuffer, RouterMessage
from recnet.world.embedding import AttributeSpace, HashingEmbedder
from recnet.world.rules import FilterMemory, default_rules
from recnet.world.snapshot import WorldSnapshot
from recnet.world.world import World

GROUP_A = ["genre:western", "tag:desert", "tag:horses", "era:1960s"]
GROUP_B = ["genre:anime", "tag:robots", "tag:space", "era:2000s"]


def two_community_world(n_per_group: int = 12, n_routers: int = 1) -> World:
    """Users and items in two disjoint attribute communities, all in one broad router."""
    space = AttributeSpace(HashingEmbedder(64))
    filters = FilterMemory(default_rules(FilterSettings()), max_rules=8)
    world = World(space, filters)
    rng = np.random.default_rng(3)
    clients = []
    for group, attributes in (("a", GROUP_A), ("b", GROUP_B)):
        for k in range(n_per_group):
            kind = "user" if k % 2 == 0 else "item"
            key = f"{group}{k}"
            profile = {a: float(rng.uniform(0.5, 1.0)) for a in attributes}
            clients.append(
                ClientAgent(
                    agent_id=("u:" if kind == "user" else "i:") + key,
                    kind=kind,  # type: ignore[arg-type]
                    key=key,
                    label=key,
                    original=profile,
                    buffer=MessageBuffer(4),
                    filters=filters,
                )
            )
    world.add_clients(clients)
    broad = {a: 1.0 for a in GROUP_A + GROUP_B}
    for _ in range(n_routers):
        world.add_router(RouterAgent(world.new_router_id(), dict(broad), tau=0.2))
    world.update_memberships()
    return world


def group_of(agent_id: str) -> str:
    return agent_id.split(":")[1][0]


def test_split_separates_communities_and_keeps_invariants() -> None:
    world = two_community_world()
    assert router_ops.spread(world, "r:0") > 0.2
    change = router_ops.split(world, "r:0", np.random.default_rng(0), step=4, profile_size=16)
    assert change is not None and change.removed == ("r:0",)
    assert set(world.routers) == set(change.created) and len(change.created) == 2
    assert router_ops.check_invariants(world, scored=change.created) == []
    # each community's clients have the same best router, and the two communities differ
    best = {}
    for client in world.clients:
        routers = world.memberships[client.agent_id]
        best.setdefault(group_of(client.agent_id), set()).add(max(routers, key=routers.get))
    assert len(best["a"]) == 1 and len(best["b"]) == 1 and best["a"] != best["b"]
    for router_id in change.created:
        assert world.routers[router_id].origin == "split:r:0"
        assert world.routers[router_id].created_step == 4


def test_split_refuses_a_router_with_too_few_members() -> None:
    world = two_community_world(n_per_group=1)
    assert (
        router_ops.split(
            world, "r:0", np.random.default_rng(0), step=0, profile_size=16, min_members=4
        )
        is None
    )
    assert set(world.routers) == {"r:0"}


def test_merge_of_near_duplicates_keeps_invariants() -> None:
    world = two_community_world(n_routers=2)
    pairs = router_ops.near_duplicates(world, 0.99)
    assert [(a, b) for a, b, _ in pairs] == [("r:0", "r:1")]
    change = router_ops.merge(world, "r:0", "r:1", step=2, profile_size=16)
    assert change.removed == ("r:0", "r:1") and len(change.created) == 1
    assert set(world.routers) == set(change.created)
    assert world.routers[change.created[0]].origin == "merge:r:0+r:1"
    assert router_ops.check_invariants(world, scored=change.created) == []
    assert len(world.members(change.created[0])) == len(world.clients)
    assert router_ops.near_duplicates(world, 0.99) == []


def test_most_similar_routers_come_closest_first_without_the_router_itself() -> None:
    world = two_community_world(n_routers=1)
    for attributes in (GROUP_A, GROUP_B, GROUP_A[:3] + GROUP_B[:1]):
        world.add_router(RouterAgent(world.new_router_id(), dict.fromkeys(attributes, 1.0), 0.2))
    # r:1 is western, r:2 anime, r:3 mostly western
    assert router_ops.most_similar(world, "r:1", 2) == ["r:3", "r:0"]
    assert router_ops.most_similar(world, "r:2", 1) == ["r:0"]
    assert "r:1" not in router_ops.most_similar(world, "r:1", 10)
    assert len(router_ops.most_similar(world, "r:1", 10)) == 3


def test_raising_tau_drops_members_but_nobody_is_orphaned() -> None:
    world = two_community_world(n_routers=1)
    split = router_ops.split(world, "r:0", np.random.default_rng(0), step=0, profile_size=16)
    assert split is not None
    first, second = split.created
    world.routers[second].profile = {a: 1.0 for a in GROUP_A + GROUP_B}
    router_ops.refresh_memberships(world, [second])
    before = len(world.members(second))
    router_ops.set_tau(world, second, 0.99)
    assert len(world.members(second)) < before
    assert world.routers[second].version == 2
    assert router_ops.check_invariants(world, scored=[first, second]) == []


def test_check_invariants_reports_orphans_and_stale_scores() -> None:
    world = two_community_world()
    client = world.clients[0].agent_id
    router_ops.remove_member(world, client, "r:0")
    world.graph.edges[world.clients[1].agent_id, "r:0"]["score"] = 5.0
    problems = router_ops.check_invariants(world, scored=["r:0"])
    assert any(client in p and "no router" in p for p in problems)
    assert any("score" in p for p in problems)
    # (issue 12: the membership edges are the only record now, so there is no second copy left
    # to disagree with them; the check that it agreed is gone with it)


# -- snapshot ------------------------------------------------------------------------------------


def state_of(world: World) -> dict[str, object]:
    """Everything the backward phase may change, in comparable form."""
    return {
        "clients": {
            c.agent_id: (
                sorted(c.original.items()),
                sorted(c.propagated.items()),
                c.text,
                c.propagated_text,
                c.filters,
                c.interactions,
                tuple(m.message_id for m in c.buffer.peek()),
            )
            for c in world.clients
        },
        "routers": [
            (
                r.router_id,
                sorted(r.profile.items()),
                r.tau,
                r.created_step,
                r.origin,
                r.version,
                r.text,
            )
            for r in world.routers.values()
        ],
        "router_nodes": sorted(n for n, k in world.graph.nodes(data="kind") if k == "router"),
        "edges": sorted(
            (u, v, tuple(sorted(d.items()))) for u, v, d in world.graph.edges(data=True)
        ),
        "mirror": {c: sorted(m.items()) for c, m in world.memberships.items()},
        "vectors": world.client_vectors.tobytes(),
        "counters": (world.step, world._next_message_id, world._next_router_number),
        "vocabulary": list(world.space.names),
        "default_filters": world.default_filters,
    }


def test_snapshot_restores_the_exact_prior_state_after_every_kind_of_change() -> None:
    world = two_community_world(n_routers=2)
    world.clients[0].buffer.push(
        RouterMessage(
            world.new_message_id(),
            "r:0",
            world.clients[0].agent_id,
            0,
            0.5,
            {"genre:western": 1.0},
            "",
        )
    )
    expected = state_of(world)
    snapshot = WorldSnapshot.capture(world)

    user = world.clients[0]
    user.propagated = {"genre:anime": 0.4}
    user.filters = world.default_filters.replaced(world.default_filters.rules[:2], user.agent_id)
    user.buffer.drain()
    user.interactions += 3
    router_ops.set_tau(world, "r:1", 0.9)
    merged = router_ops.merge(world, "r:0", "r:1", step=1, profile_size=16)
    router_ops.split(world, merged.created[0], np.random.default_rng(1), step=1, profile_size=16)
    world.space.add(["tag:brand new attribute"])
    world.client_vectors[0] = 0.0
    world.step = 7
    world.new_message_id()
    assert state_of(world) != expected

    snapshot.restore(world)
    assert state_of(world) == expected
    assert router_ops.check_invariants(world) == []
    # the snapshot stays reusable
    router_ops.set_tau(world, "r:0", 0.95)
    snapshot.restore(world)
    assert state_of(world) == expected


def test_snapshot_of_some_clients_leaves_the_others_alone() -> None:
    world = two_community_world()
    first, second = world.clients[0], world.clients[1]
    snapshot = WorldSnapshot.capture(world, [first.agent_id], vectors=False)
    first.propagated = {"genre:anime": 1.0}
    second.propagated = {"genre:western": 1.0}
    snapshot.restore(world)
    assert first.propagated == {}
    assert second.propagated == {"genre:western": 1.0}


@pytest.mark.parametrize("n_routers", [1, 3])
def test_refresh_memberships_matches_the_worlds_own_rule(n_routers: int) -> None:
    world = two_community_world(n_routers=n_routers)
    for k, router in enumerate(world.routers.values()):
        router.profile = {GROUP_A[k % 4]: 1.0, GROUP_B[(k + 1) % 4]: 0.5}
        router.tau = 0.1 + 0.1 * k
    router_ops.refresh_memberships(world, list(world.routers))
    ours = {c: dict(m) for c, m in world.memberships.items()}
    world.update_memberships()
    theirs = {c: dict(m) for c, m in world.memberships.items()}
    assert {c: set(m) for c, m in ours.items()} == {c: set(m) for c, m in theirs.items()}
    for client, routers in ours.items():
        for router_id, score in routers.items():
            assert score == pytest.approx(theirs[client][router_id], abs=1e-6)


def test_a_client_only_snapshot_leaves_routers_alone() -> None:
    world = two_community_world(n_routers=2)
    user = world.clients[0]
    snapshot = WorldSnapshot.capture(world, [user.agent_id], vectors=False, routers=False)
    user.propagated = {"genre:anime": 1.0}
    router_ops.set_tau(world, "r:1", 0.9)
    snapshot.restore(world)
    assert user.propagated == {}
    assert world.routers["r:1"].tau == 0.9 and world.routers["r:1"].version == 2


def test_world_pickles_without_derived_vectors_and_restores_them_bit_for_bit() -> None:
    world = two_community_world()
    changed = world.clients[3]
    changed.original = {**changed.original, "genre:new": 0.7}  # grows the attribute space
    world.refresh_client_vectors([changed.agent_id])
    world.router_matrix()  # fills the router-vector cache

    blob = pickle.dumps(world)
    state = world.__getstate__()
    assert state["client_vectors"] is None and "_router_vectors" not in state
    assert state["space"].__getstate__()["_matrix"] is None  # the hashing embedder makes it again
    restored = pickle.loads(blob)

    assert np.array_equal(restored.client_vectors, world.client_vectors)
    assert restored.client_vectors.dtype == world.client_vectors.dtype
    assert np.array_equal(restored.space.matrix, world.space.matrix)
    ids, vectors = restored.router_matrix()
    assert ids == world.router_matrix()[0] and np.array_equal(vectors, world.router_matrix()[1])
    # the restored space grows as before, and takes the run's embedder back
    restored.space.attach(HashingEmbedder(64))
    restored.space.add(["tag:later"])
    assert restored.space.index["tag:later"] == len(world.space.names)

"""``propagation.max_memberships``: a client belongs to at most that many routers — its strongest
above τ, always its best — through every way memberships change (build, a client's change, router
rewrites, splits and merges), and the default (no cap) keeps the paper's rule."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from recnet.config import load_scenario
from recnet.runner import simulate
from recnet.world import router_ops
from recnet.world import world as world_module
from recnet.world.agents import RouterAgent
from recnet.world.world import membership_mask
from tests.test_backward_world_ops import GROUP_A, GROUP_B, two_community_world

REPO = Path(__file__).resolve().parents[1]


def test_the_mask_keeps_the_strongest_above_tau_and_always_the_best() -> None:
    scores = np.array(
        [
            [0.9, 0.8, 0.7, 0.1],  # three above tau: the two strongest
            [0.2, 0.6, 0.6, 0.6],  # ties: the earlier routers
            [0.1, 0.3, 0.2, 0.0],  # none above tau: still its best router
        ],
        dtype=np.float32,
    )
    taus = np.full(4, 0.5, dtype=np.float32)
    capped = membership_mask(scores, taus, 2)
    assert capped.tolist() == [
        [True, True, False, False],
        [False, True, True, False],
        [False, True, False, False],
    ]
    uncapped = membership_mask(scores, taus, None)
    assert uncapped.tolist()[0] == [True, True, True, False]
    assert uncapped.tolist()[1] == [False, True, True, True]
    assert membership_mask(scores, taus, 4).tolist() == uncapped.tolist()


def test_the_ratio_keeps_only_routers_near_the_best() -> None:
    scores = np.array(
        [
            [0.9, 0.82, 0.7, 0.1],  # 0.82 >= 0.9 x 0.9, 0.7 is not
            [0.3, 0.2, 0.1, 0.0],  # none above tau: still its best router
        ],
        dtype=np.float32,
    )
    taus = np.full(4, 0.5, dtype=np.float32)
    assert membership_mask(scores, taus, None, 0.9).tolist() == [
        [True, True, False, False],
        [True, False, False, False],
    ]
    assert membership_mask(scores, taus, 1, 0.9).tolist()[0] == [True, False, False, False]


@pytest.mark.parametrize("cap", [1, 2, 3, 5])
def test_the_mask_sorts_only_crowded_rows_and_matches_a_sort_of_every_row(cap: int) -> None:
    """The cap sorts only rows with more than ``cap`` candidates; on random scores with many
    ties (two decimals) the mask equals the rule applied by sorting every row."""
    rng = np.random.default_rng(3)
    scores = np.round(rng.uniform(-0.2, 1.0, size=(400, 30)), 2).astype(np.float32)
    taus = np.round(rng.uniform(0.3, 0.9, size=30), 2).astype(np.float32)
    rows = np.arange(len(scores))
    for ratio in (None, 0.9):
        above = membership_mask(scores, taus, None, ratio)  # the candidates (tested above)
        masked = np.where(above, scores, -np.inf)
        strongest = np.argsort(-masked, axis=1, kind="stable")[:, :cap]
        expected = np.zeros_like(above)
        expected[rows[:, None], strongest] = True
        expected &= above
        got = membership_mask(scores, taus, cap, ratio)
        assert got.tolist() == expected.tolist()
        assert (got.sum(axis=1) <= cap).all() and (above.sum(axis=1) > cap).any()


def capped_world(cap: int):
    world = two_community_world(n_routers=1)
    for attributes in (GROUP_A, GROUP_B, GROUP_A[:3] + GROUP_B[:1], GROUP_B[:3] + GROUP_A[:1]):
        world.add_router(RouterAgent(world.new_router_id(), dict.fromkeys(attributes, 1.0), 0.05))
    world.max_memberships = cap
    world.update_memberships()
    return world


def assert_capped(world, cap: int) -> None:
    assert router_ops.check_invariants(world, scored=list(world.routers)) == []
    counts = [len(world.routers_of(c.agent_id)) for c in world.clients]
    assert max(counts) <= cap and min(counts) >= 1


@pytest.mark.parametrize("cap", [1, 2])
def test_router_changes_keep_every_client_within_the_cap(cap: int) -> None:
    world = capped_world(cap)
    uncapped = capped_world(cap)
    uncapped.max_memberships = None
    uncapped.update_memberships()
    # without the cap some client is in more routers than the cap allows: the test can fail
    assert max(len(uncapped.routers_of(c.agent_id)) for c in uncapped.clients) > cap
    assert_capped(world, cap)
    router_ops.rewrite(world, "r:0", {"genre:western": 1.0})
    assert_capped(world, cap)
    router_ops.set_tau(world, "r:1", 0.0)
    assert_capped(world, cap)
    largest = max(world.routers, key=lambda r: len(world.members(r)))
    split = router_ops.split(
        world, largest, np.random.default_rng(0), step=2, profile_size=16, min_members=2
    )
    assert split is not None
    assert_capped(world, cap)
    first, second = sorted(world.routers)[:2]
    router_ops.merge(world, first, second, step=3, profile_size=16)
    assert_capped(world, cap)
    # the refresh gives the same edges as recomputing everyone with the world's own rule
    ours = {c: set(m) for c, m in world.memberships.items()}
    world.update_memberships()
    assert ours == {c: set(m) for c, m in world.memberships.items()}


def test_the_scenario_cap_reaches_the_world(tmp_path: Path) -> None:
    overrides = [
        "dataset.synthetic.n_users=60",
        "dataset.synthetic.n_items=120",
        "dataset.synthetic.n_communities=6",
        "world.n_routers=6",
        "propagation.update_size=15",
        "propagation.tau=-1.0",  # every router is above tau: only the cap limits memberships
        "propagation.membership_ratio=null",
    ]
    edges = {}
    for cap in (None, 1):
        extra = [f"propagation.max_memberships={'null' if cap is None else cap}"]
        scenario = load_scenario(REPO / "scenarios" / "synthetic.yaml", [*overrides, *extra])
        result = asyncio.run(simulate(scenario, trace_path=tmp_path / f"cap-{cap}.sqlite"))
        db = sqlite3.connect(result.trace_path)
        # membership edges of the initial routers (their first version), as traced
        edges[cap] = db.execute(
            "SELECT SUM(n_members), COUNT(*) FROM router_versions WHERE version = 1"
        ).fetchone()
        db.close()
    clients = 60 + 120
    assert edges[1] == (clients, 6)  # exactly one router each
    assert edges[None] == (6 * clients, 6)  # every client in every router


@pytest.mark.parametrize("cap", [None, 2])
def test_scoring_clients_in_chunks_gives_the_same_memberships(
    cap: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memberships are computed a bounded number of clients at a time (memory at a million
    clients); chunks of two clients give the edges of one pass over all of them."""
    whole = capped_world(cap or 2)
    whole.max_memberships = cap
    whole.update_memberships()
    router_ops.rewrite(whole, "r:1", {"genre:anime": 1.0, "tag:robots": 1.0})
    chunked = capped_world(cap or 2)
    chunked.max_memberships = cap
    monkeypatch.setattr(world_module, "chunk_rows", lambda n_columns: 2)
    chunked.update_memberships()
    router_ops.rewrite(chunked, "r:1", {"genre:anime": 1.0, "tag:robots": 1.0})
    # the same edges; scores equal up to float32 rounding (a matrix product of two rows may
    # round its last bit differently from one of all rows)
    assert {c: set(m) for c, m in chunked.memberships.items()} == {
        c: set(m) for c, m in whole.memberships.items()
    }
    for client, routers in chunked.memberships.items():
        assert routers == pytest.approx(whole.memberships[client], abs=1e-6)
    assert len(chunked.clients) > 2  # more than one chunk

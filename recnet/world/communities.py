"""Routers from interaction communities: Louvain on the co-interaction graph of seen interactions.

Pipeline position: the ``interaction_communities`` perception and routing policies (forward steps
2 and 4, registered in ``recnet.registry``). ``CommunityIndex`` lives on the world
(``world.communities``); the perception policy rebuilds it every ``propagation.community_every``
steps' worth of learned interactions, before routing the step's changes.

The graph is built only from interactions the forward phase has *learned*: the world graph's
``interaction`` edges (``World.record_interaction``), never ``world.history`` (which holds every
split, test items included). It is rebuilt whenever the learned interactions have doubled since
the last build, and at the latest every ``propagation.community_every`` steps' worth of them (one
rebuild costs ~0.3 s CPU at ml-latest-small's size, so the cadence bounds the run's overhead).
Users who share items are linked, each shared item weighted by
1 / log(2 + its number of users), and each user keeps its ``community_neighbours`` strongest links
(a sparse, symmetric k-nearest-neighbour graph). ``networkx.community.louvain_communities`` runs
on it with a seed derived from the scenario seed and the rebuild number. An item belongs to the
community most of its seen users belong to.

Each community of at least two clients is assigned a router: communities and routers are matched
one to one by cos(mean member vector, router vector) (``linear_sum_assignment``); communities
beyond the number of routers share their best-matching router. A client's change goes to its
community's router (a client in no community yet falls back to ``membership`` perception), and a
router multicasts to the members of the communities assigned to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from recnet.world.profile import Weights

if TYPE_CHECKING:
    from recnet.config.scenario import PropagationSettings
    from recnet.context import RunContext
    from recnet.world.world import World


def seen_interactions(world: World) -> list[tuple[str, str]]:
    """(user agent id, item agent id) for every interaction the forward phase has learned."""
    graph, pairs = world.graph, []
    for user_id in world.users:
        if user_id not in graph:
            continue
        for other, data in graph[user_id].items():
            if data.get("kind") == "interaction":
                pairs.append((user_id, other))
    return pairs


def co_interaction_graph(pairs: list[tuple[str, str]], neighbours: int) -> nx.Graph:
    """Users linked by shared items (IDF-weighted), each keeping its ``neighbours`` best links."""
    users = sorted({u for u, _ in pairs})
    items = sorted({i for _, i in pairs})
    graph = nx.Graph()
    graph.add_nodes_from(users)
    if len(users) < 2:
        return graph
    u_index = {u: k for k, u in enumerate(users)}
    i_index = {i: k for k, i in enumerate(items)}
    rows = np.array([u_index[u] for u, _ in pairs], dtype=np.int64)
    cols = np.array([i_index[i] for _, i in pairs], dtype=np.int64)
    a = sparse.csr_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(users), len(items)))
    a.data[:] = 1.0
    degree = np.asarray(a.sum(axis=0)).ravel()
    weighted = a @ sparse.diags(1.0 / np.log(2.0 + degree))
    shared = (weighted @ a.T).tocsr()
    shared.setdiag(0.0)
    shared.eliminate_zeros()
    for row in range(shared.shape[0]):
        start, end = shared.indptr[row], shared.indptr[row + 1]
        if start == end:
            continue
        cols_row, data_row = shared.indices[start:end], shared.data[start:end]
        order = np.lexsort((cols_row, -data_row))[:neighbours]
        for k in order.tolist():
            graph.add_edge(users[row], users[int(cols_row[k])], weight=float(data_row[k]))
    return graph


class CommunityIndex:
    """Client → community → router, rebuilt from seen interactions on a cadence."""

    def __init__(self, seed_root: int, settings: PropagationSettings) -> None:
        self.seed_root = seed_root
        self.every = settings.community_every * settings.update_size  # interactions
        self.step = settings.update_size
        self.neighbours = settings.community_neighbours
        self.resolution = settings.community_resolution
        self.builds = 0
        self.built_at = -1  # learned interactions when last built
        self.community: dict[str, int] = {}  # client agent id → community number
        self.communities: list[list[str]] = []  # community number → client ids, sorted
        self.router_of: dict[int, str] = {}  # community number → router id
        self.members: dict[str, list[str]] = {}  # router id → client ids of its communities

    def learned(self, world: World) -> int:
        return sum(u.interactions for u in world.users.values())

    def refresh(self, world: World) -> None:
        """Rebuild when the learned interactions doubled since the last build, or at the latest
        after ``every`` new ones; re-assign routers when an assigned router is gone (a
        backward-phase merge)."""
        learned = self.learned(world)
        due = min(self.every, max(self.step, self.built_at))
        if learned > 0 and (self.built_at < 0 or learned - self.built_at >= due):
            self.build(world, learned)
        elif any(r not in world.routers for r in self.members):
            self.assign(world)

    def build(self, world: World, learned: int) -> None:
        pairs = seen_interactions(world)
        graph = co_interaction_graph(pairs, self.neighbours)
        seed = int(
            np.random.default_rng(
                np.random.SeedSequence(self.seed_root, spawn_key=(self.builds,))
            ).integers(0, 2**31 - 1)
        )
        found = nx.community.louvain_communities(
            graph, weight="weight", resolution=self.resolution, seed=seed
        )
        users = sorted((sorted(c) for c in found), key=lambda c: (-len(c), c[0]))
        community = {u: k for k, c in enumerate(users) for u in c}
        votes: dict[str, dict[int, int]] = {}
        for user_id, item_id in pairs:
            bucket = votes.setdefault(item_id, {})
            bucket[community[user_id]] = bucket.get(community[user_id], 0) + 1
        for item_id, counts in votes.items():
            community[item_id] = min(counts, key=lambda k: (-counts[k], k))
        groups: list[list[str]] = [[] for _ in users]
        for client_id, k in community.items():
            groups[k].append(client_id)
        self.community = community
        self.communities = [sorted(g, key=world.client_position.__getitem__) for g in groups]
        self.builds += 1
        self.built_at = learned
        self.assign(world)

    def assign(self, world: World) -> None:
        """Match communities of two or more clients to routers by cosine (one to one first)."""
        router_ids, router_vectors = world.router_matrix()
        self.router_of, self.members = {}, {}
        ks = [k for k, members in enumerate(self.communities) if len(members) >= 2]
        if not router_ids or not ks:
            return
        vectors = world.client_vectors
        centres = np.stack(
            [
                vectors[[world.client_position[c] for c in self.communities[k]]].mean(axis=0)
                for k in ks
            ]
        )
        similarity = centres @ router_vectors.T
        rows, cols = linear_sum_assignment(-similarity)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            self.router_of[ks[row]] = router_ids[col]
        for row, k in enumerate(ks):
            if k not in self.router_of:
                self.router_of[k] = router_ids[int(similarity[row].argmax())]
        for k in ks:
            self.members.setdefault(self.router_of[k], []).extend(self.communities[k])

    def router(self, client_id: str) -> str | None:
        k = self.community.get(client_id)
        return None if k is None else self.router_of.get(k)


def communities_of(world: World) -> CommunityIndex:
    index = getattr(world, "communities", None)
    if index is None:
        raise RuntimeError(
            "the interaction_communities policies were not bound to the run "
            "(ForwardPhase binds them; a custom caller must call .bind(ctx, world))"
        )
    return index


class _Bound:
    """Shared binding: one ``CommunityIndex`` per world, seeded from the scenario seed."""

    def bind(self, ctx: RunContext, world: World) -> None:
        if getattr(world, "communities", None) is None:
            seed_root = ctx.seeds.integer_seed("interaction-communities")
            world.communities = CommunityIndex(seed_root, ctx.scenario.propagation)


class CommunityPerception(_Bound):
    """A changed client's change goes to its interaction community's router."""

    def __call__(self, world: World, changed: Mapping[str, Weights]) -> dict[str, Weights]:
        index = communities_of(world)
        index.refresh(world)
        routed: dict[str, Weights] = {}
        for agent_id, delta in changed.items():
            router_id = index.router(agent_id)
            # in no community yet: the routers it is a content member of (membership perception)
            targets = [router_id] if router_id is not None else sorted(world.routers_of(agent_id))
            for target in targets:
                bucket = routed.setdefault(target, {})
                for attribute, change in delta.items():
                    bucket[attribute] = bucket.get(attribute, 0.0) + change
        return routed


class CommunityRouting(_Bound):
    """A router reaches the members of the communities assigned to it, best score first."""

    def __call__(
        self,
        world: World,
        sender: str,
        scores: np.ndarray,
        tau: float,
        settings: PropagationSettings,
    ) -> tuple[np.ndarray, np.ndarray]:
        index = communities_of(world)
        index.refresh(world)
        members = index.members.get(sender, [])
        positions = np.array([world.client_position[c] for c in members], dtype=np.int64)
        positions = positions[np.isfinite(scores[positions])]
        order = np.lexsort((positions, -scores[positions]))[: settings.max_recipients]
        chosen = positions[order]
        return chosen, scores[chosen]


interaction_communities_perception = CommunityPerception()
interaction_communities_routing = CommunityRouting()

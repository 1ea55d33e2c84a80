"""Router operations of the backward phase: rewrite, τ change, split and merge.

Pipeline position: called by ``recnet.phases.backward`` to apply the critic's router decisions
(``recnet.critic``); every change of routers and memberships goes through ``World``'s methods.
Every operation keeps the graph's invariants, which ``check_invariants`` states: every client
belongs to at least one router, membership edges join a live router and a known client (no
dangling edges), and membership scores are the cosine of the client's and the router's current
embeddings for every router an operation touched. The router count bounds
(``world.min_routers``/``max_routers``) are the caller's to respect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from recnet.world.profile import Weights, add_scaled, normalized, top
from recnet.world.routing import spherical_kmeans, unit_rows
from recnet.world.world import World


@dataclass(frozen=True, slots=True)
class RouterChange:
    """What one operation did: routers removed and created (rewrite/τ: the same id in both)."""

    operation: str
    removed: tuple[str, ...]
    created: tuple[str, ...]


def router_vector(world: World, router_id: str) -> np.ndarray:
    return world.space.embed_weights(world.routers[router_id].profile)


def member_positions(world: World, router_id: str) -> np.ndarray:
    """Positions (in ``world.clients``) of a router's members, ascending (order-independent)."""
    members = world.members(router_id)
    return np.array(sorted(world.client_position[m] for m in members), dtype=np.int64)


def spread(world: World, router_id: str) -> float:
    """How mixed a router's community is: 1 − mean cos(member, router); 0 with no members."""
    positions = member_positions(world, router_id)
    if positions.size == 0:
        return 0.0
    scores = world.client_vectors[positions] @ router_vector(world, router_id)
    return float(1.0 - scores.mean())


def add_member(world: World, client_id: str, router_id: str, score: float) -> None:
    """Add (or re-score) a membership (``World.set_membership``)."""
    world.set_membership(client_id, router_id, score)


def remove_member(world: World, client_id: str, router_id: str) -> None:
    world.remove_membership(client_id, router_id)


def refresh_memberships(
    world: World, router_ids: Iterable[str], orphans: Iterable[str] = ()
) -> None:
    """Recompute the membership edges of ``router_ids`` with the world's rule (cos ≥ τ, or the
    client's best router), then give every client left without a router — among the touched
    routers' old members and ``orphans`` — an edge to its best router."""
    ids, vectors = world.router_matrix()
    if not ids:
        return
    cap = world.max_memberships
    if (cap is not None and cap < len(ids)) or world.membership_ratio is not None:
        refresh_capped(world, router_ids, orphans, ids, vectors)
        return
    column = {r: j for j, r in enumerate(ids)}
    scores = world.client_vectors @ vectors.T
    best = scores.argmax(axis=1)
    clients = world.clients
    check = set(orphans)
    for router_id in dict.fromkeys(router_ids):
        j = column.get(router_id)
        if j is None:
            continue
        tau = world.routers[router_id].tau
        wanted = np.flatnonzero((scores[:, j] >= tau) | (best == j))
        wanted_ids = {clients[p].agent_id: p for p in wanted.tolist()}
        for client_id in world.members(router_id):
            if client_id not in wanted_ids:
                remove_member(world, client_id, router_id)
                check.add(client_id)
        edges = world.graph[router_id]
        for client_id, p in wanted_ids.items():
            score = float(scores[p, j])
            data = edges.get(client_id)
            if data is None:
                add_member(world, client_id, router_id, score)
            elif data["score"] != score:
                world.set_membership(client_id, router_id, score)
    for client_id in sorted(check, key=world.client_position.__getitem__):
        if not world.routers_of(client_id):
            p = world.client_position[client_id]
            j = int(best[p])
            add_member(world, client_id, ids[j], float(scores[p, j]))


def refresh_capped(
    world: World,
    router_ids: Iterable[str],
    orphans: Iterable[str],
    ids: list[str],
    vectors: np.ndarray,
) -> None:
    """``refresh_memberships`` when a client may belong to at most ``world.max_memberships``
    routers, or only to those near its best (``world.membership_ratio``): a touched router
    changes which routers are a client's strongest, so every client that was or becomes a member
    of a touched router (and every orphan) gets its whole row of memberships recomputed
    (``World.update_memberships``)."""
    column = {r: j for j, r in enumerate(ids)}
    touched = [column[r] for r in dict.fromkeys(router_ids) if r in column]
    affected = set(orphans)
    for j in touched:
        affected.update(world.members(ids[j]))
    if touched:
        clients = world.clients
        everyone = np.arange(len(clients))
        for start, _, allowed in world.membership_chunks(everyone, ids, vectors):
            rows = np.flatnonzero(allowed[:, touched].any(axis=1)) + start
            affected.update(clients[p].agent_id for p in rows.tolist())
    known = [c for c in affected if c in world.client_position]
    world.update_memberships(sorted(known, key=world.client_position.__getitem__))


def rewrite(
    world: World, router_id: str, profile: Weights, text: str | None = None
) -> RouterChange:
    """Give a router a new profile (a new version) and recompute its memberships."""
    router = world.routers[router_id]
    router.profile = dict(profile)
    router.text = text
    router.version += 1
    refresh_memberships(world, [router_id])
    return RouterChange("rewrite", (router_id,), (router_id,))


def set_tau(world: World, router_id: str, tau: float) -> RouterChange:
    """Change a router's multicast threshold τ (a new version) and recompute its memberships."""
    router = world.routers[router_id]
    router.tau = float(tau)
    router.version += 1
    refresh_memberships(world, [router_id])
    return RouterChange("tau", (router_id,), (router_id,))


def split(
    world: World,
    router_id: str,
    rng: np.random.Generator,
    *,
    step: int,
    profile_size: int,
    min_members: int = 4,
) -> RouterChange | None:
    """Split a router in two by 2-means on its members' embeddings (None when it cannot split).

    Each child's profile blends the parent's profile with the normalised mean profile of its
    half of the members, so the two children lean towards their own sub-communities.
    """
    parent = world.routers[router_id]
    positions = member_positions(world, router_id)
    if positions.size < max(min_members, 2):
        return None
    points = unit_rows(world.client_vectors[positions])
    labels, _ = spherical_kmeans(points, 2, rng)
    halves = [positions[labels == k] for k in range(2)]
    if any(h.size == 0 for h in halves):
        return None
    base = normalized(parent.profile)
    profiles = []
    for half in halves:
        mean: Weights = {}
        for p in half.tolist():
            for a, w in normalized(world.clients[p].original).items():
                if w > 0:
                    mean[a] = mean.get(a, 0.0) + w
        blended = add_scaled({a: 0.5 * w for a, w in base.items()}, normalized(mean), 0.5)
        profiles.append(normalized(top({a: w for a, w in blended.items() if w > 0}, profile_size)))
    if profiles[0] == profiles[1]:
        return None
    members = world.retire_router(router_id)
    created = [
        world.create_router(
            profile, parent.tau, created_step=step, origin=f"split:{router_id}"
        ).router_id
        for profile in profiles
    ]
    refresh_memberships(world, created, orphans=members)
    return RouterChange("split", (router_id,), tuple(created))


def merge(world: World, first: str, second: str, *, step: int, profile_size: int) -> RouterChange:
    """Merge two routers into a new one: summed profiles (normalised), mean τ."""
    a, b = world.routers[first], world.routers[second]
    profile = normalized(
        top(add_scaled(normalized(a.profile), normalized(b.profile), 1.0), profile_size)
    )
    members = world.retire_router(first) + world.retire_router(second)
    router = world.create_router(
        profile, (a.tau + b.tau) / 2.0, created_step=step, origin=f"merge:{first}+{second}"
    )
    refresh_memberships(world, [router.router_id], orphans=members)
    return RouterChange("merge", (first, second), (router.router_id,))


def near_duplicates(world: World, threshold: float) -> list[tuple[str, str, float]]:
    """Disjoint router pairs with cos(profile embeddings) ≥ ``threshold``, most similar first."""
    ids, vectors = world.router_matrix()
    if len(ids) < 2:
        return []
    similarity = vectors @ vectors.T
    rows, cols = np.triu_indices(len(ids), k=1)
    values = similarity[rows, cols]
    order = np.lexsort((cols, rows, -values))
    taken: set[int] = set()
    pairs = []
    for k in order.tolist():
        if values[k] < threshold:
            break
        i, j = int(rows[k]), int(cols[k])
        if i in taken or j in taken:
            continue
        taken.update((i, j))
        pairs.append((ids[i], ids[j], float(values[k])))
    return pairs


def most_similar(world: World, router_id: str, n: int) -> list[str]:
    """The ``n`` routers whose profile embeddings are closest to ``router_id``'s, closest first."""
    ids, vectors = world.router_matrix()
    if router_id not in ids or len(ids) < 2:
        return []
    k = ids.index(router_id)
    similarity = vectors @ vectors[k]
    order = sorted((j for j in range(len(ids)) if j != k), key=lambda j: (-similarity[j], j))
    return [ids[j] for j in order[:n]]


def check_invariants(
    world: World, scored: Iterable[str] = (), tolerance: float = 1e-4
) -> list[str]:
    """Problems with the router graph (empty list = all invariants hold).

    Checks: every client belongs to at least one router; router nodes and ``world.routers``
    agree; every membership edge joins a live router and a known client; and for the routers in
    ``scored`` every edge's score equals the current cosine of client and router embeddings.
    """
    problems: list[str] = []
    graph = world.graph
    router_nodes = {n for n, kind in graph.nodes(data="kind") if kind == "router"}
    if router_nodes != set(world.routers):
        problems.append(
            f"router nodes {sorted(router_nodes ^ set(world.routers))} do not match world.routers"
        )
    for router_id in router_nodes:
        for client_id, data in graph[router_id].items():
            if client_id not in world.client_position:
                problems.append(f"edge {router_id}–{client_id} leads to no known client")
            elif data.get("kind") != "member":
                problems.append(f"edge {router_id}–{client_id} is not a membership edge")
    for client in world.clients:
        routers = {n for n in graph[client.agent_id] if n in router_nodes}
        if not routers:
            problems.append(f"client {client.agent_id} belongs to no router")
    for router_id in scored:
        if router_id not in world.routers:
            continue
        vector = router_vector(world, router_id)
        for client_id, data in graph[router_id].items():
            expected = float(world.client_vectors[world.client_position[client_id]] @ vector)
            if abs(float(data["score"]) - expected) > tolerance:
                problems.append(f"edge {router_id}–{client_id} score {data['score']} ≠ {expected}")
    return problems

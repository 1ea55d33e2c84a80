"""Perception and routing policies: who hears of a change (forward steps 2 and 4).

Pipeline position: looked up by name in ``recnet.registry.PERCEPTION`` (``propagation.perception``)
and ``recnet.registry.ROUTING`` (``propagation.routing``) by the forward phase. A perception policy
sends each changed attribute of a step to routers; a routing policy picks the clients one sender's
multicast reaches from its cosine scores against every client. The built-ins are the paper's rules:
``nearest_router`` (``argmax_R cos(e_a, e_R)``), ``threshold`` (``cos >= τ``) and ``top_k``, and
the community rules: ``membership`` perception (a client's change goes to the routers the client is
a member of, i.e. to its own communities, not to clients who already share the new taste) and
``members`` routing (a router reaches its members). A new policy is one module with a function of
the matching protocol, registered by name.

Clients that cannot act on a message (``acts_until``: items never chosen and in no candidate list,
users with no training interaction left and no test list) get a ``-inf`` score before any routing
policy sees it (``excluded_mask``), unless ``propagation.message_idle_clients`` asks for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Protocol

import numpy as np

from recnet.data.types import Interaction
from recnet.world.agents import item_agent_id, user_agent_id
from recnet.world.profile import Weights
from recnet.world.routing import nearest_router, select_recipients

if TYPE_CHECKING:
    from recnet.config.scenario import PropagationSettings
    from recnet.world.world import World

#: ``acts_until`` of a client that acts until the end (a test user, an item in a candidate list).
FOREVER = np.iinfo(np.int64).max


class PerceptionPolicy(Protocol):
    """The step's changes (client id → its attribute deltas) → router id → routed deltas."""

    def __call__(self, world: World, changed: Mapping[str, Weights]) -> dict[str, Weights]: ...


class RoutingPolicy(Protocol):
    """One sender's cosine scores against every client → (client positions, their scores).

    ``scores`` has one entry per ``world.clients`` position (``-inf`` = never send); ``tau`` is the
    sender's threshold. Positions come back best first.

    A policy that only ever picks among the sender router's members may carry a ``members_only``
    attribute, ``(world, sender, router vector, skipped mask, settings) -> (positions, scores)``
    (see ``members_only``): the forward phase then calls it instead and never scores every
    client, which keeps a step's multicast cost proportional to the members reached.
    """

    def __call__(
        self,
        world: World,
        sender: str,
        scores: np.ndarray,
        tau: float,
        settings: PropagationSettings,
    ) -> tuple[np.ndarray, np.ndarray]: ...


def _add(routed: dict[str, Weights], router_id: str, delta: Mapping[str, float]) -> None:
    bucket = routed.setdefault(router_id, {})
    for attribute, change in delta.items():
        bucket[attribute] = bucket.get(attribute, 0.0) + change


def nearest_router_perception(world: World, changed: Mapping[str, Weights]) -> dict[str, Weights]:
    """The paper's perception: each changed attribute (summed over the step's clients) goes to
    ``argmax_R cos(e_a, e_R)``."""
    totals: Weights = {}
    for delta in changed.values():
        for attribute, change in delta.items():
            totals[attribute] = totals.get(attribute, 0.0) + change
    if not totals:
        return {}
    space = world.space
    names = list(totals)
    space.add(names)
    vectors = space.matrix[[space.index[a] for a in names]]
    router_ids, router_vectors = world.router_matrix()
    positions, _ = nearest_router(vectors, router_vectors)
    routed: dict[str, Weights] = {}
    for attribute, position in zip(names, positions.tolist(), strict=True):
        if position < 0:
            continue
        _add(routed, router_ids[position], {attribute: totals[attribute]})
    return routed


def membership_perception(world: World, changed: Mapping[str, Weights]) -> dict[str, Weights]:
    """Each changed client's change goes to every router it is a member of (its communities)."""
    routed: dict[str, Weights] = {}
    order = {router_id: n for n, router_id in enumerate(world.routers)}
    for agent_id, delta in changed.items():
        # the client's own edges (O(its routers), not a view of every membership), in the
        # routers' creation order so messages are sent in the same order as always
        for router_id in sorted(world.routers_of(agent_id), key=order.__getitem__):
            _add(routed, router_id, delta)
    return routed


def threshold_routing(
    world: World, sender: str, scores: np.ndarray, tau: float, settings: PropagationSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Every client with ``cos >= τ``, at most ``max_recipients``, highest first."""
    return select_recipients(scores, tau=tau, max_recipients=settings.max_recipients)


def top_k_routing(
    world: World, sender: str, scores: np.ndarray, tau: float, settings: PropagationSettings
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` best-scoring clients (at most ``max_recipients``), whatever τ."""
    return select_recipients(
        scores, tau=tau, max_recipients=settings.max_recipients, top_k=settings.top_k
    )


def _member_arrays(world: World, sender: str) -> tuple[np.ndarray, np.ndarray]:
    """A router's members (client positions) and their membership strengths, in edge order."""
    # a router's only edges are its memberships. Read from networkx's adjacency dict itself, not
    # through the read-only view ``graph[sender]``, whose lookups run in Python: 1.16 -> 0.37 ms
    # for a router of 5,000 members (a 30k world's largest has 5.4k); at a million agents this
    # function held 13 % of the steps' samples (py-spy)
    edges = world.graph._adj[sender]
    count = len(edges)
    members = np.fromiter(map(world.client_position.__getitem__, edges), np.int64, count)
    strength = np.fromiter(map(itemgetter("score"), edges.values()), np.float64, count)
    return members, strength


def _strongest(members: np.ndarray, strength: np.ndarray, limit: int) -> np.ndarray:
    """Members strongest membership first (then client position), at most ``limit``."""
    order = np.lexsort((members, -strength))
    return members[order[:limit]]


def members_routing(
    world: World, sender: str, scores: np.ndarray, tau: float, settings: PropagationSettings
) -> tuple[np.ndarray, np.ndarray]:
    """A router's members (a client with an empty profile is nobody's member), strongest
    membership first, at most ``max_recipients``; each keeps its score cos(router, client) (the
    min_relevance rule reads it only with ``world.filters.relevance: routing_score``). Clients
    scored ``-inf`` are skipped."""
    members, strength = _member_arrays(world, sender)
    keep = (strength > 0.0) & np.isfinite(scores[members])
    positions = _strongest(members[keep], strength[keep], settings.max_recipients)
    return positions, scores[positions]


def members_only(
    world: World,
    sender: str,
    vector: np.ndarray,
    skipped: np.ndarray | None,
    settings: PropagationSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """``members_routing`` without a score against every client: the same recipients, and only
    they are scored (cos of their embedding and the router's ``vector``). ``skipped`` marks the
    client positions a multicast must skip (``excluded_mask``)."""
    members, strength = _member_arrays(world, sender)
    keep = strength > 0.0
    if skipped is not None:
        keep &= ~skipped[members]
    positions = _strongest(members[keep], strength[keep], settings.max_recipients)
    return positions, world.client_vectors[positions] @ vector


#: The forward phase calls this instead of ``members_routing`` (see ``RoutingPolicy``).
members_routing.members_only = members_only  # type: ignore[attr-defined]


def acts_until(
    world: World,
    train: Iterable[Interaction],
    candidate_lists: Iterable[Mapping[str, Sequence[str]]],
) -> np.ndarray:
    """Per client position: the last training-stream position at which it acts (chooses or is
    chosen), ``FOREVER`` for test users and items in a candidate list, -1 for clients that never
    act."""
    last = np.full(len(world.clients), -1, dtype=np.int64)
    position = world.client_position
    for seq, interaction in enumerate(train):
        last[position[user_agent_id(interaction.user)]] = seq
        last[position[item_agent_id(interaction.item)]] = seq
    for lists in candidate_lists:
        for user, items in lists.items():
            agent = position.get(user_agent_id(user))
            if agent is not None:
                last[agent] = FOREVER
            for item in items:
                found = position.get(item_agent_id(item))
                if found is not None:
                    last[found] = FOREVER
    return last


def excluded_mask(world: World, now: int, *, idle: bool, kinds: Sequence[str]) -> np.ndarray | None:
    """True for clients a multicast must skip: those that can no longer act at stream position
    ``now`` (unless ``idle`` allows them) and those of a kind not in ``kinds``; None = none."""
    mask = None
    until = getattr(world, "acts_until", None)
    if not idle and until is not None and len(until) == len(world.clients):
        mask = until < now
    if set(kinds) != {"user", "item"}:
        wrong = np.array([c.kind not in kinds for c in world.clients], dtype=bool)
        mask = wrong if mask is None else mask | wrong
    return mask

"""Perception and multicast policies of the forward phase (steps 2 and 4), chosen by name.

Pipeline position: called by ``recnet.phases.forward`` after the interaction update. A perception
policy turns the step's changed clients into attribute changes routed to routers; a recipients
policy picks who hears a router's multicast. ``PERCEPTION`` and ``RECIPIENTS`` map the scenario's
names (``propagation.perception``, ``propagation.multicast_to``) to them.

* ``nearest_router`` (the paper): every changed attribute goes to the router nearest *the
  attribute*; the change reaches clients near that router, who often already share the new taste.
* ``membership``: a client's change goes to the routers the client is a *member* of, so it
  reaches the client's own community, including members whose history does not show it yet.
* ``similar`` recipients: clients with cos(router, client) ≥ τ (or the top-k);
  ``members`` recipients: the router's members.

Clients that cannot act on a message (``acts_until``: items never chosen and in no candidate
list, users with no training interaction left and no test list) are never messaged unless
``propagation.message_idle_clients`` asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from recnet.config.scenario import PropagationSettings
from recnet.data.types import Interaction
from recnet.world.agents import item_agent_id, user_agent_id
from recnet.world.profile import Weights
from recnet.world.routing import nearest_router, select_recipients
from recnet.world.world import World

#: ``acts_until`` of a client that acts until the end (a test user, an item in a candidate list).
FOREVER = np.iinfo(np.int64).max

Routed = dict[str, Weights]
Perception = Callable[[World, Mapping[str, Weights]], Routed]


def _add(routed: Routed, router_id: str, delta: Mapping[str, float], scale: float = 1.0) -> None:
    target = routed.setdefault(router_id, {})
    for attribute, change in delta.items():
        target[attribute] = target.get(attribute, 0.0) + scale * change


def perceive_nearest_router(world: World, changed: Mapping[str, Weights]) -> Routed:
    """The paper's rule: each changed attribute (summed over clients) → its nearest router."""
    totals: Weights = {}
    for delta in changed.values():
        for attribute, change in delta.items():
            totals[attribute] = totals.get(attribute, 0.0) + change
    routed: Routed = {}
    if not totals:
        return routed
    space = world.space
    space.add(list(totals))
    names = list(totals)
    vectors = space.matrix[[space.index[a] for a in names]]
    router_ids, router_vectors = world.router_matrix()
    positions, _ = nearest_router(vectors, router_vectors)
    for attribute, position in zip(names, positions.tolist(), strict=True):
        if position >= 0:
            _add(routed, router_ids[position], {attribute: totals[attribute]})
    return routed


def perceive_membership(world: World, changed: Mapping[str, Weights]) -> Routed:
    """Each changed client's change → every router it is a member of (its communities)."""
    routed: Routed = {}
    for agent_id, delta in changed.items():
        for router_id in world.memberships.get(agent_id, {}):
            if router_id in world.routers:
                _add(routed, router_id, delta)
    return routed


PERCEPTION: dict[str, Perception] = {
    "nearest_router": perceive_nearest_router,
    "membership": perceive_membership,
}


def member_recipients(world: World, router_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A router's member clients (positions) and their membership scores, best first."""
    members = [
        (world.client_position[c], float(world.memberships.get(c, {}).get(router_id, 0.0)))
        for c in world.members(router_id)
        if c in world.client_position
    ]
    # a client with an empty profile "belongs" to an arbitrary best router at score 0: not a member
    members = [(p, s) for p, s in members if s > 0.0]
    if not members:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    positions = np.array([p for p, _ in members], dtype=np.int64)
    scores = np.array([s for _, s in members], dtype=np.float32)
    order = np.lexsort((positions, -scores))
    return positions[order], scores[order]


def acts_until(
    world: World,
    train: Iterable[Interaction],
    candidate_lists: Iterable[Mapping[str, list[str]]],
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


def plan_multicast(
    world: World,
    settings: PropagationSettings,
    senders: Sequence[str],
    profiles: Sequence[Weights],
    now: int,
) -> Iterator[tuple[str, Weights, np.ndarray, np.ndarray]]:
    """``(sender, message, recipient positions, scores)`` per sender, best recipient first.

    ``multicast_to: members`` reaches the router's members by membership strength, each message
    scored by its relevance to the recipient, cos(message, client), which the min_relevance
    filter rule reads; ``similar`` reaches clients with cos(router, client) ≥ τ (or the top-k; in
    ``point_to_point`` mode, a changed client's ``neighbours`` most similar clients).
    """
    if not senders:
        return
    idle = excluded_mask(
        world, now, idle=settings.message_idle_clients, kinds=settings.multicast_kinds
    )
    if settings.mode == "routers" and settings.multicast_to == "members":
        message_vectors = world.space.embed_many(list(profiles))
        for column, (sender, profile) in enumerate(zip(senders, profiles, strict=True)):
            positions, _ = member_recipients(world, sender)
            if idle is not None:
                positions = positions[~idle[positions]]
            positions = positions[: settings.max_recipients]
            yield (
                sender,
                profile,
                positions,
                world.client_vectors[positions] @ message_vectors[column],
            )
        return
    if settings.mode == "point_to_point":
        routing_profiles, top_k = list(profiles), settings.neighbours
        taus = [-1.0] * len(senders)
    else:
        routing_profiles = [world.routers[r].profile for r in senders]
        top_k = settings.top_k if settings.routing == "top_k" else None
        taus = [world.routers[r].tau for r in senders]
    scores = world.client_vectors @ world.space.embed_many(routing_profiles).T
    if idle is not None:
        scores[idle, :] = -np.inf
    for column, sender in enumerate(senders):
        exclude = world.client_position.get(sender)
        if exclude is not None:
            scores[exclude, column] = -np.inf
        positions, chosen = select_recipients(
            scores[:, column], tau=taus[column], max_recipients=settings.max_recipients, top_k=top_k
        )
        yield sender, profiles[column], positions, chosen

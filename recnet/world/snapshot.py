"""Exact capture and restore of the world state the backward phase may change (its rollback).

Pipeline position: the backward phase (``recnet.phases.backward``) captures a ``WorldSnapshot``
before it applies an optimisation and restores it when validation NDCG drops by more than
``backward.epsilon``. What is captured: client profiles (original, propagated, texts), filter
memories, interaction counters and buffers of the chosen clients; every router (profile, τ,
version, origin, text); every client–router membership edge with its data; the client embedding
matrix (optional) and the world's counters (step, message and router ids, attribute vocabulary).
Interaction edges and history are not captured: nothing in the backward phase changes them.

Restore goes through ``World``'s own methods (``restore_routers``, ``restore_numbering``) and is
diff-based: edges and routers that did not change are left in place, so the graph's
iteration order is kept whenever the optimisation did not add or remove routers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.buffer import RouterMessage
from recnet.world.profile import Weights
from recnet.world.rules import FilterMemory
from recnet.world.world import World


@dataclass(frozen=True, slots=True)
class ClientState:
    """The mutable fields of one client agent."""

    original: Weights
    propagated: Weights
    text: str | None
    propagated_text: str | None
    filters: FilterMemory  # immutable: a reference is an exact copy
    interactions: int
    buffered: tuple[RouterMessage, ...]

    @classmethod
    def of(cls, agent: ClientAgent) -> ClientState:
        return cls(
            original=dict(agent.original),
            propagated=dict(agent.propagated),
            text=agent.text,
            propagated_text=agent.propagated_text,
            filters=agent.filters,
            interactions=agent.interactions,
            buffered=tuple(agent.buffer.peek()),
        )

    def restore(self, agent: ClientAgent) -> None:
        agent.original = dict(self.original)
        agent.propagated = dict(self.propagated)
        agent.text = self.text
        agent.propagated_text = self.propagated_text
        agent.filters = self.filters
        agent.interactions = self.interactions
        if tuple(agent.buffer.peek()) != self.buffered:
            agent.buffer.drain()
            for message in self.buffered:
                agent.buffer.push(message)


def _copy_router(router: RouterAgent) -> RouterAgent:
    return replace(router, profile=dict(router.profile))


EdgeKey = tuple[str, str]  # (client id, router id)


@dataclass(frozen=True, slots=True)
class WorldSnapshot:
    """A restorable copy of the backward-phase-mutable state of a ``World``."""

    clients: dict[str, ClientState]
    routers: tuple[RouterAgent, ...] | None  # in ``world.routers`` order; None = not captured
    memberships: dict[EdgeKey, dict[str, object]]
    client_vectors: np.ndarray | None
    step: int
    next_message_id: int
    next_router_number: int
    n_attributes: int
    default_filters: FilterMemory

    @classmethod
    def capture(
        cls,
        world: World,
        clients: Iterable[str] | None = None,
        *,
        vectors: bool = True,
        routers: bool = True,
    ) -> WorldSnapshot:
        """Capture ``clients`` (agent ids; None = every client), all routers and memberships.

        ``vectors=False`` skips the client embedding matrix (the backward phase never changes
        original profiles, from which those vectors come); ``routers=False`` skips routers and
        memberships (for changes that touch clients only), and restore then leaves them alone.
        """
        ids = (
            [c.agent_id for c in world.clients] if clients is None else list(dict.fromkeys(clients))
        )
        return cls(
            clients={a: ClientState.of(world.client(a)) for a in ids},
            routers=tuple(_copy_router(r) for r in world.routers.values()) if routers else None,
            memberships=world.membership_edges() if routers else {},
            client_vectors=world.client_vectors.copy() if vectors else None,
            step=world.step,
            next_message_id=world.router_numbering()[0],
            next_router_number=world.router_numbering()[1],
            n_attributes=len(world.space.names),
            default_filters=world.default_filters,
        )

    def restore(self, world: World, *, reuse_router_ids: bool = True) -> None:
        """Put ``world`` back into the captured state (the snapshot stays reusable).

        ``reuse_router_ids=False`` keeps the router counter where it is, so ids of routers
        created after the capture (and now rolled back) are never given out again."""
        for agent_id, state in self.clients.items():
            state.restore(world.client(agent_id))
        if self.routers is not None:
            self._restore_routers(world)
        if self.client_vectors is not None:
            world.client_vectors = self.client_vectors.copy()
        world.step = self.step
        router_number = self.next_router_number if reuse_router_ids else world.router_numbering()[1]
        world.restore_numbering(self.next_message_id, router_number)
        _truncate_vocabulary(world, self.n_attributes)
        world.default_filters = self.default_filters

    def _restore_routers(self, world: World) -> None:
        assert self.routers is not None
        world.restore_routers([_copy_router(r) for r in self.routers], self.memberships)


def membership_edges(world: World) -> dict[EdgeKey, dict[str, object]]:
    """Every client–router edge, keyed ``(client, router)``, with a copy of its data."""
    return world.membership_edges()


def _truncate_vocabulary(world: World, size: int) -> None:
    """Forget attributes embedded after the snapshot (they only ever grow the vocabulary)."""
    space = world.space
    if len(space.names) <= size:
        return
    for name in space.names[size:]:
        del space.index[name]
    del space.names[size:]

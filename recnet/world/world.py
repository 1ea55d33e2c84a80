"""The ``World``: every agent, the attribute space and the networkx graph that wires them.

Pipeline position: built once per run (``recnet.world.build``), then read and changed by the phases.
Graph nodes are agent ids (``u:<user>``, ``i:<item>``, ``r:<n>``) with a ``kind`` attribute; edges
are user–item interactions (``kind="interaction"``) and client–router memberships
(``kind="member"``, ``score`` = cos(router, client)). Client embeddings are kept as one matrix so
that multicast is a single matrix product.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx
import numpy as np

from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.embedding import AttributeSpace
from recnet.world.rules import FilterMemory


class World:
    """All agents of a run. No LLM calls and no I/O happen here."""

    def __init__(self, space: AttributeSpace, default_filters: FilterMemory) -> None:
        self.space = space
        self.default_filters = default_filters
        self.graph = nx.Graph()
        self.users: dict[str, ClientAgent] = {}
        self.items: dict[str, ClientAgent] = {}
        self.routers: dict[str, RouterAgent] = {}
        self.clients: list[ClientAgent] = []
        self.client_position: dict[str, int] = {}
        self.client_vectors = np.zeros((0, space.dim), dtype=np.float32)
        self.history: dict[str, set[str]] = {}  # user agent id → item agent ids (all splits)
        self.memberships: dict[str, dict[str, float]] = {}  # client id → router id → score
        self.step = -1  # last completed step
        self._next_message_id = 0
        self._next_router_number = 0

    # clients -----------------------------------------------------------------------------------
    def add_clients(self, agents: Iterable[ClientAgent]) -> None:
        """Register clients and embed their original profiles."""
        added = list(agents)
        for agent in added:
            target = self.users if agent.kind == "user" else self.items
            target[agent.agent_id] = agent
            self.client_position[agent.agent_id] = len(self.clients)
            self.clients.append(agent)
            self.graph.add_node(agent.agent_id, kind=agent.kind)
        vectors = self.space.embed_many([a.original for a in added])
        self.client_vectors = np.vstack([self.client_vectors, vectors])

    def client(self, agent_id: str) -> ClientAgent:
        agent = self.users.get(agent_id) or self.items.get(agent_id)
        if agent is None:
            raise KeyError(f"no client agent {agent_id!r}")
        return agent

    def refresh_client_vectors(self, agent_ids: Iterable[str]) -> None:
        """Re-embed the original profiles of clients that changed."""
        for agent_id in agent_ids:
            agent = self.client(agent_id)
            self.client_vectors[self.client_position[agent_id]] = self.space.embed_weights(
                agent.original
            )

    def record_interaction(self, user_id: str, item_id: str, timestamp: int) -> None:
        self.graph.add_edge(user_id, item_id, kind="interaction", timestamp=timestamp)

    # routers -----------------------------------------------------------------------------------
    def new_router_id(self) -> str:
        router_id = f"r:{self._next_router_number}"
        self._next_router_number += 1
        return router_id

    def add_router(self, router: RouterAgent) -> None:
        self.routers[router.router_id] = router
        self.graph.add_node(router.router_id, kind="router")

    def remove_router(self, router_id: str) -> None:
        """Delete a router, its graph node and edges, and every membership that names it."""
        del self.routers[router_id]
        self.__dict__.get("_router_vectors", {}).pop(router_id, None)
        for client_id in list(self.graph[router_id]):
            self.memberships.get(client_id, {}).pop(router_id, None)
        self.graph.remove_node(router_id)

    def router_matrix(self) -> tuple[list[str], np.ndarray]:
        """Router ids (sorted by creation) and their profile embeddings."""
        ids = sorted(self.routers, key=lambda r: int(r.split(":")[1]))
        matrix = np.zeros((len(ids), self.space.dim), dtype=np.float32)
        for row, router_id in enumerate(ids):
            matrix[row] = self.router_vector(router_id)
        return ids, matrix

    def router_vector(self, router_id: str) -> np.ndarray:
        """The embedding of a router's profile, computed once per profile version.

        Profiles are replaced, never edited in place (integrate, rewrite, split, merge and
        rollback all assign a new map), so the map's identity tells whether the cached vector is
        current. Equal to ``space.embed_weights(profile)``, bit for bit.
        """
        cache: dict[str, tuple[dict[str, float], np.ndarray]]
        cache = self.__dict__.setdefault("_router_vectors", {})
        profile = self.routers[router_id].profile
        hit = cache.get(router_id)
        if hit is not None and hit[0] is profile:
            return hit[1]
        vector = self.space.embed_weights(profile)
        cache[router_id] = (profile, vector)
        return vector

    def update_memberships(self, agent_ids: Iterable[str] | None = None) -> None:
        """Recompute client–router edges: every router whose cos ≥ its τ, and always the best one,
        so each client belongs to at least one router."""
        router_ids, router_vectors = self.router_matrix()
        if not router_ids:
            return
        taus = np.array([self.routers[r].tau for r in router_ids], dtype=np.float32)
        targets = list(agent_ids) if agent_ids is not None else [c.agent_id for c in self.clients]
        if not targets:  # a step where no client changed (e.g. every answer fell back)
            return
        positions = np.array([self.client_position[a] for a in targets], dtype=np.int64)
        scores = self.client_vectors[positions] @ router_vectors.T
        above = scores >= taus
        best = scores.argmax(axis=1)
        above[np.arange(len(targets)), best] = True
        graph = self.graph
        for row, agent_id in enumerate(targets):
            for router_id in self.memberships.get(agent_id, ()):
                graph.remove_edge(agent_id, router_id)
            current = {}
            for column in np.flatnonzero(above[row]).tolist():
                score = float(scores[row, column])
                current[router_ids[column]] = score
                graph.add_edge(agent_id, router_ids[column], kind="member", score=score)
            self.memberships[agent_id] = current

    def members(self, router_id: str) -> list[str]:
        """Client ids that belong to a router (a router's only edges are memberships)."""
        return list(self.graph[router_id])

    def member_count(self, router_id: str) -> int:
        return int(self.graph.degree(router_id))

    # messages ----------------------------------------------------------------------------------
    def new_message_id(self) -> int:
        self._next_message_id += 1
        return self._next_message_id

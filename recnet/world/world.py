"""The ``World``: every agent, the attribute space and the networkx graph that wires them.

Pipeline position: built once per run (``recnet.world.build``), then read and changed by the phases.
Graph nodes are agent ids (``u:<user>``, ``i:<item>``, ``r:<n>``) with a ``kind`` attribute; edges
are user–item interactions (``kind="interaction"``) and client–router memberships
(``kind="member"``, ``score`` = cos(router, client)); those edges are the only record of who
belongs to which router. The World is their only writer: routers are created (and numbered),
retired and restored, and memberships set or removed, only through its methods — the forward
phase, ``recnet.world.router_ops`` and ``recnet.world.snapshot`` all go through them. Client
embeddings are kept as one matrix so that multicast is a single matrix product.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np

from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.embedding import AttributeSpace
from recnet.world.profile import Weights
from recnet.world.rules import FilterMemory
from recnet.world.trend import RouterTrends


class World:
    """All agents of a run. No LLM calls and no I/O happen here."""

    #: ``propagation.max_memberships`` (set by ``recnet.world.build``); a class default so that
    #: worlds pickled in checkpoints before the option existed read None
    max_memberships: int | None = None
    #: ``propagation.membership_ratio``: a router other than a client's best is one of its
    #: memberships only at cos ≥ this share of the best router's (None: no such condition)
    membership_ratio: float | None = None
    #: router trends users rank with (``recnet.world.trend``; None = off), set by the forward
    #: phase when ``propagation.trend_share`` > 0
    trends: RouterTrends | None = None

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
        self.step = -1  # last completed step
        #: per client position, the last training-stream position at which it acts (see
        #: ``recnet.phases.perception.acts_until``); None = unknown, everyone may be messaged
        self.acts_until: np.ndarray | None = None
        #: interaction communities (``recnet.world.communities``), set when a policy uses them
        self.communities: Any = None
        self._next_message_id = 0
        self._next_router_number = 0

    # pickling (checkpoints) --------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Pickle without what the profiles determine: the client embeddings (a quarter of a
        checkpoint at 30k agents, 1 GB at a million) and the router-vector cache."""
        state = dict(self.__dict__)
        state["client_vectors"] = None
        state.pop("_router_vectors", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore, re-embedding the clients' original profiles: ``client_vectors`` always
        equals ``space.embed_many`` of them (kept so by ``refresh_client_vectors``), bit for bit;
        a checkpoint written before this method still carries its matrix."""
        self.__dict__.update(state)
        if self.client_vectors is None:
            self.client_vectors = self.space.embed_many([agent.original for agent in self.clients])

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

    # routers ---------------------------------------------------------------------------------
    def new_router_id(self) -> str:
        """The next router id (``r:<n>``); numbers are never reused within a run."""
        router_id = f"r:{self._next_router_number}"
        self._next_router_number += 1
        return router_id

    def add_router(self, router: RouterAgent) -> None:
        self.routers[router.router_id] = router
        self.graph.add_node(router.router_id, kind="router")

    def create_router(
        self, profile: Weights, tau: float, *, created_step: int = -1, origin: str = "init"
    ) -> RouterAgent:
        """Number, create and add a router (no memberships yet)."""
        router = RouterAgent(
            router_id=self.new_router_id(),
            profile=profile,
            tau=tau,
            created_step=created_step,
            origin=origin,
        )
        self.add_router(router)
        return router

    def retire_router(self, router_id: str) -> list[str]:
        """Delete a router with its graph node and membership edges; return its former members."""
        members = self.members(router_id)
        del self.routers[router_id]
        self.__dict__.get("_router_vectors", {}).pop(router_id, None)
        self.graph.remove_node(router_id)
        return members

    def router_numbering(self) -> tuple[int, int]:
        """The id counters (next message id, next router number), for snapshots."""
        return self._next_message_id, self._next_router_number

    def restore_numbering(self, next_message_id: int, next_router_number: int) -> None:
        self._next_message_id = next_message_id
        self._next_router_number = next_router_number

    def restore_routers(
        self, routers: Sequence[RouterAgent], edges: Mapping[tuple[str, str], Mapping[str, object]]
    ) -> None:
        """Put back exactly ``routers`` (in this order) and the membership ``edges``
        (``(client, router)`` → edge data), touching only what differs."""
        wanted = {r.router_id for r in routers}
        for router_id in [r for r in self.routers if r not in wanted]:
            self.retire_router(router_id)
        for router in routers:
            if router.router_id not in self.graph:
                self.graph.add_node(router.router_id, kind="router")
        self.routers.clear()
        self.routers.update((r.router_id, r) for r in routers)
        current = self.membership_edges()
        graph = self.graph
        for key in current.keys() - edges.keys():
            graph.remove_edge(*key)
        for key, data in edges.items():
            if key not in current:
                graph.add_edge(*key, **data)
            elif current[key] != data:
                edge = graph.edges[key]
                edge.clear()
                edge.update(data)

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

    # memberships -------------------------------------------------------------------------------
    def set_membership(self, client_id: str, router_id: str, score: float) -> None:
        """Add (or re-score) the membership edge of a client and a router."""
        self.graph.add_edge(client_id, router_id, kind="member", score=score)

    def remove_membership(self, client_id: str, router_id: str) -> None:
        self.graph.remove_edge(client_id, router_id)

    def trend_of(self, user_id: str) -> Weights:
        """The trend of the routers a user belongs to (empty when trends are off)."""
        if self.trends is None:
            return {}
        routers = self.routers
        return self.trends.of(n for n in self.graph[user_id] if n in routers)

    def recent_of(self, user: ClientAgent) -> list[ClientAgent]:
        """The items a user chose last (its short-term memory, oldest first)."""
        items = self.items
        return [items[i] for i in user.recent]

    def routers_of(self, client_id: str) -> dict[str, float]:
        """The routers a client belongs to, with their membership scores."""
        routers = self.routers
        return {n: d["score"] for n, d in self.graph[client_id].items() if n in routers}

    @property
    def memberships(self) -> dict[str, dict[str, float]]:
        """Client id → router id → score for every client in a router (a view of the edges)."""
        out: dict[str, dict[str, float]] = {}
        for router_id in self.routers:
            for client_id, data in self.graph[router_id].items():
                out.setdefault(client_id, {})[router_id] = data["score"]
        return out

    def membership_edges(self) -> dict[tuple[str, str], dict[str, object]]:
        """Every client–router edge, keyed ``(client, router)``, with a copy of its data."""
        edges: dict[tuple[str, str], dict[str, object]] = {}
        graph = self.graph
        for router_id in self.routers:
            if router_id not in graph:
                continue
            for client_id, data in graph[router_id].items():
                edges[(client_id, router_id)] = dict(data)
        return edges

    def update_memberships(self, agent_ids: Iterable[str] | None = None) -> None:
        """Recompute client–router edges: every router whose cos ≥ its τ (at most
        ``max_memberships``, the strongest), and always the best one, so each client belongs to at
        least one router."""
        router_ids, router_vectors = self.router_matrix()
        if not router_ids:
            return
        targets = list(agent_ids) if agent_ids is not None else [c.agent_id for c in self.clients]
        if not targets:  # a step where no client changed (e.g. every answer fell back)
            return
        positions = np.array([self.client_position[a] for a in targets], dtype=np.int64)
        graph, routers = self.graph, self.routers
        for start, scores, above in self.membership_chunks(positions, router_ids, router_vectors):
            for row, agent_id in enumerate(targets[start : start + len(scores)]):
                for router_id in [n for n in graph[agent_id] if n in routers]:
                    graph.remove_edge(agent_id, router_id)
                for column in np.flatnonzero(above[row]).tolist():
                    score = float(scores[row, column])
                    graph.add_edge(agent_id, router_ids[column], kind="member", score=score)

    def membership_chunks(
        self, positions: np.ndarray, router_ids: Sequence[str], router_vectors: np.ndarray
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """The clients at ``positions`` scored against the routers, a bounded number at a time
        (memory: a million clients x 10k routers): ``(offset into positions, cosines, membership
        mask)`` per chunk, the mask by ``membership_mask`` with each router's τ and the cap."""
        taus = np.array([self.routers[r].tau for r in router_ids], dtype=np.float32)
        size = chunk_rows(len(router_ids))
        for start in range(0, len(positions), size):
            scores = self.client_vectors[positions[start : start + size]] @ router_vectors.T
            mask = membership_mask(scores, taus, self.max_memberships, self.membership_ratio)
            yield start, scores, mask

    def members(self, router_id: str) -> list[str]:
        """Client ids that belong to a router (a router's only edges are memberships)."""
        return list(self.graph[router_id])

    def member_count(self, router_id: str) -> int:
        return int(self.graph.degree(router_id))

    # messages ----------------------------------------------------------------------------------
    def new_message_id(self) -> int:
        self._next_message_id += 1
        return self._next_message_id


def chunk_rows(n_columns: int, cells: int = 1 << 22) -> int:
    """Rows per chunk when scoring clients against ``n_columns`` routers, so that one chunk's
    score matrix (and its sort) holds about ``cells`` entries."""
    return max(1, cells // max(n_columns, 1))


def membership_mask(
    scores: np.ndarray, taus: np.ndarray, cap: int | None, ratio: float | None = None
) -> np.ndarray:
    """Which (client row, router column) pairs are memberships: cos ≥ the router's τ (and, with
    ``ratio``, ≥ ``ratio`` × the client's best cos), and always the client's best router; with
    ``cap``, only a client's ``cap`` strongest of those (equal scores: the earlier router)."""
    above = scores >= taus
    rows = np.arange(len(scores))
    best = scores.argmax(axis=1)
    if ratio is not None:
        above &= scores >= ratio * scores[rows, best][:, None]
    above[rows, best] = True
    if cap is None or cap >= scores.shape[1]:
        return above
    # only rows with more than ``cap`` candidates need a sort: most have one or two, and a sort
    # of every row over all routers grew with the world (a 1M world has 13k routers)
    crowded = np.flatnonzero(np.count_nonzero(above, axis=1) > cap)
    if crowded.size:
        masked = np.where(above[crowded], scores[crowded], -np.inf)
        strongest = np.argsort(-masked, axis=1, kind="stable")[:, :cap]
        kept = np.zeros((crowded.size, scores.shape[1]), dtype=bool)
        kept[np.arange(crowded.size)[:, None], strongest] = True
        above[crowded] &= kept
    return above

"""Perception and routing policies: who hears of a change (forward steps 2 and 4).

Pipeline position: looked up by name in ``recnet.registry.PERCEPTION`` (``propagation.perception``)
and ``recnet.registry.ROUTING`` (``propagation.routing``) by the forward phase. A perception policy
sends each changed attribute of a step to routers; a routing policy picks the clients one sender's
multicast reaches from its cosine scores against every client. The built-ins are the paper's rules:
``nearest_router`` (``argmax_R cos(e_a, e_R)``), ``threshold`` (``cos >= τ``) and ``top_k``. A new
policy is one module with a function of the matching protocol, registered by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from recnet.world.profile import Weights
from recnet.world.routing import nearest_router, select_recipients

if TYPE_CHECKING:
    from recnet.config.scenario import PropagationSettings
    from recnet.world.world import World


class PerceptionPolicy(Protocol):
    """Changed attributes (summed deltas of the step) → router id → routed attribute deltas."""

    def __call__(self, world: World, changed: Weights) -> dict[str, Weights]: ...


class RoutingPolicy(Protocol):
    """One sender's cosine scores against every client → (client positions, their scores).

    ``scores`` has one entry per ``world.clients`` position (``-inf`` = never send); ``tau`` is the
    sender's threshold. Positions come back best first.
    """

    def __call__(
        self,
        world: World,
        sender: str,
        scores: np.ndarray,
        tau: float,
        settings: PropagationSettings,
    ) -> tuple[np.ndarray, np.ndarray]: ...


def nearest_router_perception(world: World, changed: Weights) -> dict[str, Weights]:
    """The paper's perception: each attribute goes to ``argmax_R cos(e_a, e_R)``."""
    space = world.space
    names = list(changed)
    space.add(names)
    vectors = space.matrix[[space.index[a] for a in names]]
    router_ids, router_vectors = world.router_matrix()
    positions, _ = nearest_router(vectors, router_vectors)
    routed: dict[str, Weights] = {}
    for attribute, position in zip(names, positions.tolist(), strict=True):
        if position < 0:
            continue
        bucket = routed.setdefault(router_ids[position], {})
        bucket[attribute] = bucket.get(attribute, 0.0) + changed[attribute]
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

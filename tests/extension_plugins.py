"""Plug-ins written outside the package, the way a researcher would: one routing policy and one
baseline, each registered by name (used by ``tests/test_registry.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recnet.config.scenario import PropagationSettings
from recnet.data.types import Interaction
from recnet.registry import BASELINES, ROUTING
from recnet.world.world import World

NEAREST = 3


@ROUTING.register("nearest_three")
def nearest_three(
    world: World, sender: str, scores: np.ndarray, tau: float, settings: PropagationSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Each sender reaches exactly its three most similar clients, whatever τ."""
    finite = np.flatnonzero(np.isfinite(scores))
    best = finite[np.lexsort((finite, -scores[finite]))][:NEAREST]
    return best, scores[best]


class LeastPopularScorer:
    """Prefers the items chosen least often in training (a deliberately poor baseline)."""

    name = "least_popular"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def fit(self, train: Sequence[Interaction], item_ids: Sequence[str]) -> None:
        for interaction in train:
            self.counts[interaction.item] = self.counts.get(interaction.item, 0) + 1

    def score(self, user: str, candidates: Sequence[str]) -> np.ndarray:
        return -np.array([self.counts.get(c, 0) for c in candidates], dtype=np.float64)


BASELINES.register("least_popular", lambda seed: LeastPopularScorer())

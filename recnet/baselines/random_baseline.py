"""Random baseline: uniform scores, seeded per (seed, user) — the floor every model must beat.

Pipeline position: a ``Scorer`` (``recnet.baselines.base``) evaluated on the same candidate lists
as the agent brains. With 1 true + 19 negatives its expected NDCG@10 is about 0.21.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recnet.data.types import Interaction
from recnet.eval.protocol import derive_rng


class RandomScorer:
    """Uniform random scores; the same (seed, user, list length) always gives the same scores."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, train: Sequence[Interaction], item_ids: Sequence[str]) -> None:
        """Nothing to learn."""

    def score(self, user: str, candidates: Sequence[str]) -> np.ndarray:
        """Uniform [0, 1) scores drawn from a generator derived from (seed, user)."""
        return derive_rng(self.seed, "random-scorer", user).random(len(candidates))

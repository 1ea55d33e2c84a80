"""Popularity baseline: score = number of training interactions of the candidate item.

Pipeline position: a ``Scorer`` (``recnet.baselines.base``) evaluated on the same candidate lists
as the agent brains; the bar a collaborative model has to clear. Equal counts tie, and ties break
by candidate order (which is seeded-shuffled).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from recnet.data.types import Interaction


class PopularityScorer:
    """Counts training interactions per item (repeats count); unseen items score 0."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def fit(self, train: Sequence[Interaction], item_ids: Sequence[str]) -> None:
        """Count interactions per item."""
        self.counts = Counter(inter.item for inter in train)

    def score(self, user: str, candidates: Sequence[str]) -> np.ndarray:
        """The training count of each candidate."""
        return np.array([self.counts.get(c, 0) for c in candidates], dtype=np.float64)

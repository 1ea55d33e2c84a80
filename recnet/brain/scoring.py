"""The offline score with explicit profiles, vectorised over sparse attribute vectors.

Pipeline position: used by credit assignment (``recnet.brain.credit``: a module's effect is the
score change when its contribution is removed) and by the backward phase's validation
(``recnet.phases.backward.safeguard``). The formula is ``recnet.world.formulas``'
(``effective_profile`` and ``preference_score``: cosine of effective profiles + popularity prior);
``score_lists`` computes it for whole candidate lists with numpy gathers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recnet.world.formulas import effective_profile

if TYPE_CHECKING:
    from recnet.brain.credit import Side


@dataclass(frozen=True, slots=True)
class OfflineScorer:
    """The offline brain's score with explicit profiles (so modules can be removed)."""

    propagated_weight: float
    popularity_weight: float

    def effective(
        self, original: Mapping[str, float], propagated: Mapping[str, float]
    ) -> Mapping[str, float]:
        return effective_profile(original, propagated, self.propagated_weight)

    def score_lists(
        self,
        users: Sequence[Side],
        candidates: Sequence[Sequence[str]],
        item_form: Callable[[str], tuple[SparseProfile, float]],
        index: ProfileIndex,
    ) -> list[np.ndarray]:
        """Scores of each user's candidate items, as the brain's ``rank`` computes them.

        Vectorised over sparse vectors on ``index``: ``item_form(id)`` gives an item's effective
        profile as ``index.sparse(self.effective(...))`` with its popularity prior (so the caller
        can cache it); users' effective profiles are built here, once each.
        """
        out = []
        for user, ids in zip(users, candidates, strict=True):
            forms = [item_form(i) for i in ids]
            prior = np.fromiter((f[1] for f in forms), dtype=np.float64, count=len(forms))
            u = index.sparse(self.effective(user.original, user.propagated))
            out.append(index.cosines(u, [f[0] for f in forms]) + self.popularity_weight * prior)
        return out


SparseProfile = tuple[np.ndarray, np.ndarray, float]  # (columns, values, norm)


class ProfileIndex:
    """Attribute → column, so weight maps become sparse vectors and dot products numpy gathers."""

    def __init__(self) -> None:
        self.columns: dict[str, int] = {}
        self._dense = np.zeros(1024, dtype=np.float64)

    def sparse(self, weights: Mapping[str, float]) -> SparseProfile:
        columns = self.columns
        if not columns.keys() >= weights.keys():  # a set test in C; new columns are rare
            for a in weights:
                if a not in columns:
                    columns[a] = len(columns)
        count = len(weights)
        idx = np.fromiter(map(columns.__getitem__, weights), dtype=np.int64, count=count)
        values = np.fromiter(weights.values(), dtype=np.float64, count=count)
        return idx, values, float(np.sqrt(values @ values))

    def cosines(self, user: SparseProfile, items: Sequence[SparseProfile]) -> np.ndarray:
        """cos(user, item) for every item (0 where either is empty)."""
        if len(self.columns) > self._dense.shape[0]:
            self._dense = np.zeros(2 * len(self.columns), dtype=np.float64)
        dense = self._dense
        u_idx, u_val, u_norm = user
        out = np.zeros(len(items), dtype=np.float64)
        if u_norm == 0.0 or not items:
            return out
        dense[u_idx] = u_val
        try:
            lengths = np.array([f[0].shape[0] for f in items], dtype=np.int64)
            if lengths.sum() == 0:
                return out
            idx = np.concatenate([f[0] for f in items])
            val = np.concatenate([f[1] for f in items])
            products = dense[idx] * val
            ends = np.cumsum(lengths)
            totals = np.concatenate([[0.0], np.cumsum(products)])
            dots = totals[ends] - totals[ends - lengths]
            norms = np.array([f[2] for f in items], dtype=np.float64)
            ok = norms > 0
            out[ok] = dots[ok] / (u_norm * norms[ok])
            return out
        finally:
            dense[u_idx] = 0.0

"""ItemKNN baseline: item-item cosine similarity on the binary user-item training matrix.

Pipeline position: a ``Scorer`` (``recnet.baselines.base``) evaluated on the same candidate lists
as the agent brains. Like RecBole's ItemKNN: sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink),
each item keeps its ``k`` most similar neighbours, and a candidate's score for a user is the sum of
its neighbour similarities over the user's training items. Similarities are computed in blocks of
items so that memory stays at one dense (block × items) matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from recnet.baselines.base import candidate_codes, encode_train
from recnet.data.types import Interaction


class ItemKNNScorer:
    """Item-based k-nearest-neighbour collaborative filtering (cosine with shrinkage)."""

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 10.0, block_size: int = 1024) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {shrink}")
        self.k = k
        self.shrink = shrink
        self.block_size = block_size
        self._item_index: dict[str, int] = {}
        self._user_index: dict[str, int] = {}
        self._user_items: sp.csr_matrix | None = None
        self._sim: sp.csr_matrix | None = None

    def fit(self, train: Sequence[Interaction], item_ids: Sequence[str]) -> None:
        """Build the binary user-item matrix and the top-k item-item similarity matrix."""
        enc = encode_train(train, item_ids)
        n_users, n_items = len(enc.users), len(enc.items)
        ones = np.ones(enc.user_codes.size, dtype=np.float32)
        x = sp.csr_matrix((ones, (enc.user_codes, enc.item_codes)), shape=(n_users, n_items))
        x.data[:] = 1.0  # repeated interactions count once
        self._item_index = enc.item_index
        self._user_index = enc.user_index
        self._user_items = x
        self._sim = self._similarities(x)

    def _similarities(self, x: sp.csr_matrix) -> sp.csr_matrix:
        n_items = x.shape[1]
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)
        xt = x.T.tocsr()
        x_csc = x.tocsc()
        k = min(self.k, max(n_items - 1, 1))
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        for start in range(0, n_items, self.block_size):
            stop = min(start + self.block_size, n_items)
            co = (xt[start:stop] @ x_csc).toarray()
            sim = co / (norms[start:stop, None] * norms[None, :] + self.shrink + 1e-12)
            local = np.arange(stop - start)
            sim[local, local + start] = 0.0  # an item is not its own neighbour
            if k < n_items:
                top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(n_items), sim.shape)
            top_vals = np.take_along_axis(sim, top, axis=1)
            keep = top_vals > 0
            rows.append(np.broadcast_to(local[:, None] + start, top.shape)[keep])
            cols.append(top[keep])
            vals.append(top_vals[keep].astype(np.float32))
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_items, n_items),
        )

    def score(self, user: str, candidates: Sequence[str]) -> np.ndarray:
        """Sum of each candidate's top-k neighbour similarities over the user's training items."""
        if self._sim is None or self._user_items is None:
            raise RuntimeError("ItemKNNScorer.score called before fit")
        codes = candidate_codes(self._item_index, candidates)
        out = np.zeros(len(candidates), dtype=np.float64)
        u = self._user_index.get(user)
        known = codes >= 0
        if u is None or not known.any():
            return out
        profile = self._user_items[u].toarray().ravel()
        out[known] = self._sim[codes[known]] @ profile
        return out

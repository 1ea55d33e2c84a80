"""BPR-MF baseline: matrix factorisation trained with Bayesian Personalised Ranking, in numpy.

Pipeline position: a ``Scorer`` (``recnet.baselines.base``) evaluated on the same candidate lists
as the agent brains. Model: score(u, i) = <p_u, q_i> + b_i. Training maximises
ln σ(score(u, i) - score(u, j)) − reg·‖θ‖² over (user, positive, sampled negative) triples with
vectorised mini-batch SGD: each epoch visits every distinct training pair once in a seeded order,
negatives are drawn uniformly from the catalogue and redrawn while they are the user's positives,
and the batch's updates are scattered with ``np.add.at``. Deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recnet.baselines.base import candidate_codes, encode_train
from recnet.data.types import Interaction
from recnet.eval.protocol import derive_rng

_NEG_REDRAWS = 10  # rounds of redrawing negatives that hit a positive (the rest are kept)


class BPRMFScorer:
    """Bayesian Personalised Ranking matrix factorisation with item biases."""

    name = "bprmf"

    def __init__(
        self,
        factors: int = 64,
        epochs: int = 30,
        lr: float = 0.05,
        reg: float = 0.005,
        batch_size: int = 256,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        if factors < 1 or epochs < 0 or batch_size < 1:
            raise ValueError("factors and batch_size must be >= 1 and epochs >= 0")
        self.factors = factors
        self.epochs = epochs
        self.lr = lr
        self.reg = reg
        self.batch_size = batch_size
        self.init_std = init_std
        self.seed = seed
        self._item_index: dict[str, int] = {}
        self._user_index: dict[str, int] = {}
        self.user_factors = np.zeros((0, factors))
        self.item_factors = np.zeros((0, factors))
        self.item_bias = np.zeros(0)

    def fit(self, train: Sequence[Interaction], item_ids: Sequence[str]) -> None:
        """Train on the distinct (user, item) pairs of ``train``; negatives from ``item_ids``."""
        enc = encode_train(train, item_ids)
        n_users, n_items = len(enc.users), len(enc.items)
        self._item_index = enc.item_index
        self._user_index = enc.user_index
        init = derive_rng(self.seed, "bprmf", "init")
        self.user_factors = init.normal(0.0, self.init_std, (n_users, self.factors))
        self.item_factors = init.normal(0.0, self.init_std, (n_items, self.factors))
        self.item_bias = np.zeros(n_items)
        if n_users == 0 or n_items < 2:
            return
        keys = np.unique(enc.user_codes * n_items + enc.item_codes)
        users, pos = keys // n_items, keys % n_items
        rng = derive_rng(self.seed, "bprmf", "train")
        for _ in range(self.epochs):
            order = rng.permutation(keys.size)
            for start in range(0, keys.size, self.batch_size):
                batch = order[start : start + self.batch_size]
                u, i = users[batch], pos[batch]
                j = self._negatives(rng, u, keys, n_items)
                self._step(u, i, j)

    @staticmethod
    def _negatives(
        rng: np.random.Generator, u: np.ndarray, keys: np.ndarray, n_items: int
    ) -> np.ndarray:
        j = rng.integers(0, n_items, size=u.size)
        for _ in range(_NEG_REDRAWS):
            probe = u * n_items + j
            at = np.minimum(np.searchsorted(keys, probe), keys.size - 1)
            hit = keys[at] == probe
            if not hit.any():
                break
            j[hit] = rng.integers(0, n_items, size=int(hit.sum()))
        return j

    def _step(self, u: np.ndarray, i: np.ndarray, j: np.ndarray) -> None:
        p, qi, qj = self.user_factors[u], self.item_factors[i], self.item_factors[j]
        bi, bj = self.item_bias[i], self.item_bias[j]
        diff = qi - qj
        x = np.einsum("nf,nf->n", p, diff) + bi - bj
        g = 0.5 * (1.0 - np.tanh(0.5 * x))  # σ(-x), overflow-free
        lr, reg = self.lr, self.reg
        np.add.at(self.user_factors, u, lr * (g[:, None] * diff - reg * p))
        np.add.at(self.item_factors, i, lr * (g[:, None] * p - reg * qi))
        np.add.at(self.item_factors, j, lr * (-g[:, None] * p - reg * qj))
        np.add.at(self.item_bias, i, lr * (g - reg * bi))
        np.add.at(self.item_bias, j, lr * (-g - reg * bj))

    def score(self, user: str, candidates: Sequence[str]) -> np.ndarray:
        """<p_u, q_c> + b_c; an unknown user scores by item bias, an unknown item lowest."""
        codes = candidate_codes(self._item_index, candidates)
        known = codes >= 0
        out = np.full(len(candidates), -np.inf)
        u = self._user_index.get(user)
        safe = np.where(known, codes, 0)
        scores = self.item_bias[safe] if self.item_bias.size else np.zeros(len(candidates))
        if u is not None and self.item_factors.size:
            scores = scores + self.item_factors[safe] @ self.user_factors[u]
        out[known] = scores[known]
        return out

"""Ranking metrics for leave-one-out evaluation: pure numpy functions of the true item's rank.

Pipeline position: last stage of evaluation. A scorer (an agent brain or a baseline) scores each
test user's candidate list, ``rank_of_true`` / ``ranks_of_true`` turn the scores into the 1-based
rank of the held-out item, and ``summarize`` averages NDCG@K, HR@K and MRR over users, as RecBole
does for one relevant item per user.

Ties are broken by candidate order (a stable sort by descending score). Candidate lists are stored
shuffled with a seeded generator, so this is a seeded random tie-break that every model shares.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _as_ranks(ranks: Sequence[int] | np.ndarray) -> np.ndarray:
    """Validate ``ranks`` as a non-empty 1-D array of integers >= 1."""
    arr = np.asarray(ranks)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError("ranks must be integers (1-based rank of the true item)")
        arr = arr.astype(np.int64)
    if arr.min() < 1:
        raise ValueError(f"ranks are 1-based; got a rank of {int(arr.min())}")
    return arr


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"cut-off k must be >= 1, got {k}")


def ndcg_gains(ranks: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Per user, ``1 / log2(rank + 1)`` when ``rank <= k``, else 0 (one relevant item): the one
    NDCG formula, used by evaluation and by the backward phase's validation."""
    _check_k(k)
    arr = _as_ranks(ranks)
    return np.where(arr <= k, 1.0 / np.log2(arr + 1.0), 0.0)


def ndcg_at_k(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """Mean over users of their NDCG gain (``ndcg_gains``)."""
    return float(ndcg_gains(ranks, k).mean())


def hit_at_k(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """Share of users whose true item is ranked within the top ``k`` (HR@K = Recall@K here)."""
    _check_k(k)
    arr = _as_ranks(ranks)
    return float(np.mean(arr <= k))


def mrr(ranks: Sequence[int] | np.ndarray) -> float:
    """Mean reciprocal rank of the true item (no cut-off)."""
    arr = _as_ranks(ranks)
    return float(np.mean(1.0 / arr))


def summarize(ranks: Sequence[int] | np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """All metrics, ordered: ``ndcg@k`` for each k, then ``hr@k`` for each k, then ``mrr``."""
    arr = _as_ranks(ranks)
    ks = list(ks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"ndcg@{k}"] = ndcg_at_k(arr, k)
    for k in ks:
        out[f"hr@{k}"] = hit_at_k(arr, k)
    out["mrr"] = mrr(arr)
    return out


def rank_of_true(scores: Sequence[float] | np.ndarray, true_index: int) -> int:
    """1-based rank of ``scores[true_index]`` under a stable sort by descending score.

    Candidates scored strictly higher rank above the true item; candidates with an equal score rank
    above it only when they come earlier in the list.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {arr.shape}")
    if not 0 <= true_index < arr.size:
        raise ValueError(f"true_index {true_index} is outside a list of {arr.size} candidates")
    if np.isnan(arr).any():
        raise ValueError("scores contain NaN; a scorer must return finite or infinite numbers")
    true_score = arr[true_index]
    higher = int(np.count_nonzero(arr > true_score))
    tied_before = int(np.count_nonzero(arr[:true_index] == true_score))
    return 1 + higher + tied_before


def ranks_of_true(scores: np.ndarray, true_indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Vectorised ``rank_of_true`` for a (users × candidates) score matrix; returns int64 ranks."""
    mat = np.asarray(scores, dtype=np.float64)
    idx = np.asarray(true_indices, dtype=np.int64)
    if mat.ndim != 2 or mat.shape[1] == 0:
        raise ValueError(f"scores must be a 2-D (users × candidates) matrix, got {mat.shape}")
    if idx.shape != (mat.shape[0],):
        raise ValueError(f"need one true index per row: {idx.shape} for {mat.shape[0]} rows")
    if idx.size and (idx.min() < 0 or idx.max() >= mat.shape[1]):
        raise ValueError(f"true indices must lie in [0, {mat.shape[1]})")
    if np.isnan(mat).any():
        raise ValueError("scores contain NaN; a scorer must return finite or infinite numbers")
    rows = np.arange(mat.shape[0])
    true_scores = mat[rows, idx][:, None]
    higher = np.count_nonzero(mat > true_scores, axis=1)
    before = np.arange(mat.shape[1])[None, :] < idx[:, None]
    tied_before = np.count_nonzero((mat == true_scores) & before, axis=1)
    return (1 + higher + tied_before).astype(np.int64)

"""Ranking metrics on hand-computed cases, and the stable tie-break of rank_of_true."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recnet.eval.metrics import (
    hit_at_k,
    mrr,
    ndcg_at_k,
    rank_of_true,
    ranks_of_true,
    summarize,
)


def test_ndcg_hand_computed() -> None:
    assert ndcg_at_k([1, 2, 11], 10) == pytest.approx((1 + 1 / math.log2(3) + 0) / 3)
    assert ndcg_at_k([3], 5) == pytest.approx(0.5)  # 1 / log2(4)
    assert ndcg_at_k([3], 2) == 0.0
    assert ndcg_at_k([1, 1], 1) == 1.0


def test_ndcg_cutoff_is_inclusive() -> None:
    assert ndcg_at_k([10], 10) == pytest.approx(1 / math.log2(11))
    assert ndcg_at_k([11], 10) == 0.0


def test_hit_at_k_hand_computed() -> None:
    ranks = np.array([1, 2, 11])
    assert hit_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert hit_at_k(ranks, 2) == pytest.approx(2 / 3)
    assert hit_at_k(ranks, 10) == pytest.approx(2 / 3)
    assert hit_at_k(ranks, 11) == 1.0


def test_mrr_hand_computed() -> None:
    assert mrr([1, 2, 11]) == pytest.approx((1 + 1 / 2 + 1 / 11) / 3)
    assert mrr([4]) == pytest.approx(0.25)


def test_summarize_keys_in_order_and_values() -> None:
    ranks = np.array([1, 2, 11, 6])
    out = summarize(ranks, [1, 5, 10])
    assert list(out) == ["ndcg@1", "ndcg@5", "ndcg@10", "hr@1", "hr@5", "hr@10", "mrr"]
    assert out["ndcg@1"] == pytest.approx(0.25)
    assert out["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7)) / 4)
    assert out["hr@5"] == pytest.approx(0.5)
    assert out["hr@10"] == pytest.approx(0.75)
    assert out["mrr"] == pytest.approx((1 + 0.5 + 1 / 11 + 1 / 6) / 4)
    assert all(isinstance(v, float) for v in out.values())


@pytest.mark.parametrize("bad", [[], [0, 1], [1.5], [[1, 2]]])
def test_invalid_ranks_rejected(bad: list) -> None:
    with pytest.raises(ValueError):
        ndcg_at_k(bad, 5)


def test_invalid_cutoff_rejected() -> None:
    with pytest.raises(ValueError):
        hit_at_k([1], 0)


def test_integral_float_ranks_accepted() -> None:
    assert ndcg_at_k(np.array([1.0, 3.0]), 5) == pytest.approx((1 + 0.5) / 2)


def test_rank_of_true_strict_order() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    assert rank_of_true(scores, 1) == 1
    assert rank_of_true(scores, 3) == 2
    assert rank_of_true(scores, 2) == 3
    assert rank_of_true(scores, 0) == 4


def test_rank_of_true_ties_broken_by_candidate_order() -> None:
    scores = [0.5, 0.9, 0.5, 0.5]
    assert rank_of_true(scores, 0) == 2  # only 0.9 above it
    assert rank_of_true(scores, 2) == 3  # 0.9 and the tie at index 0
    assert rank_of_true(scores, 3) == 4
    assert rank_of_true([1.0] * 5, 4) == 5  # all tied: position decides


def test_rank_of_true_handles_infinities_and_rejects_nan() -> None:
    assert rank_of_true([-np.inf, 0.0, np.inf], 0) == 3
    assert rank_of_true([-np.inf, -np.inf], 1) == 2
    with pytest.raises(ValueError):
        rank_of_true([0.1, float("nan")], 0)
    with pytest.raises(ValueError):
        rank_of_true([0.1, 0.2], 2)


def test_vectorised_ranks_match_stable_sort_reference() -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, size=(200, 20)).astype(float)  # many ties
    truth = rng.integers(0, 20, size=200)
    expected = np.array(
        [int(np.flatnonzero(np.argsort(-row, kind="stable") == t)[0]) + 1
         for row, t in zip(scores, truth, strict=True)]
    )  # fmt: skip
    assert np.array_equal(ranks_of_true(scores, truth), expected)
    assert [rank_of_true(row, int(t)) for row, t in zip(scores, truth, strict=True)] == list(
        expected
    )


def test_vectorised_ranks_validate_shapes() -> None:
    with pytest.raises(ValueError):
        ranks_of_true(np.zeros((3, 4)), [0, 1])
    with pytest.raises(ValueError):
        ranks_of_true(np.zeros((2, 4)), [0, 4])
    with pytest.raises(ValueError):
        ranks_of_true(np.array([[0.0, np.nan]]), [0])

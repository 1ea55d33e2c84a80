"""Two-level k-means for router initialisation in large worlds (``recnet.world.routing``)."""

from __future__ import annotations

import numpy as np
import pytest

from recnet.world import routing
from recnet.world.routing import (
    cluster_points,
    nearest_among_neighbours,
    nearest_centroids,
    proportional_shares,
    spherical_kmeans,
    two_level_kmeans,
    unit_rows,
)


def planted(n: int, k: int, dim: int, noise: float, seed: int) -> np.ndarray:
    """Unit points around ``k`` random directions."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((k, dim)))
    noisy = centres[rng.integers(k, size=n)] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return unit_rows(noisy).astype(np.float32)


def mean_cosine(points: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> float:
    return float((points * centroids[labels]).sum(axis=1).mean())


def test_proportional_shares_by_hand() -> None:
    assert proportional_shares(np.array([10, 10, 10]), 30).tolist() == [10, 10, 10]
    assert proportional_shares(np.array([60, 30, 10]), 10).tolist() == [6, 3, 1]
    # every group gets one even when its quota is below one; the big group gives way
    assert proportional_shares(np.array([3, 3, 3, 100]), 10).tolist() == [1, 1, 1, 7]
    assert proportional_shares(np.array([7, 1, 1, 1]), 4).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="cannot split"):
        proportional_shares(np.array([2, 2]), 5)
    with pytest.raises(ValueError, match="cannot split"):
        proportional_shares(np.array([2, 2, 2]), 2)


def test_proportional_shares_stay_between_one_and_the_size_and_add_up() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(1, 50, size=int(rng.integers(1, 20)))
        total = int(rng.integers(len(sizes), sizes.sum() + 1))
        shares = proportional_shares(sizes, total)
        assert shares.sum() == total
        assert (shares >= 1).all() and (shares <= sizes).all()
        # no share is more than one away from its quota unless a bound forced it
        quota = sizes * total / sizes.sum()
        free = (shares > 1) & (shares < sizes)
        assert (np.abs(shares - quota)[free] < 1 + 1e-9).all()


def test_nearest_among_all_neighbours_is_nearest_centroid() -> None:
    points = planted(400, 9, 8, 1.0, seed=1)
    centroids = unit_rows(np.random.default_rng(2).standard_normal((9, 8))).astype(np.float32)
    labels = np.random.default_rng(3).integers(9, size=400)
    everyone = np.tile(np.arange(9), (9, 1))
    chosen, best = nearest_among_neighbours(points, labels, centroids, everyone)
    expected, expected_best = nearest_centroids(points, centroids)
    assert np.array_equal(chosen, expected)
    assert np.allclose(best, expected_best)
    # with only itself as neighbour, a point stays in its cluster
    alone, _ = nearest_among_neighbours(points, labels, centroids, np.arange(9)[:, None])
    assert np.array_equal(alone, labels)


def test_two_level_kmeans_returns_k_clusters_close_to_flat_quality() -> None:
    points = planted(6000, 120, 32, 0.6, seed=4)
    labels, centroids = two_level_kmeans(points, 120, np.random.default_rng(5))
    assert sorted(set(labels.tolist())) == list(range(120))
    assert centroids.shape == (120, 32)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    flat_labels, flat_centroids = spherical_kmeans(points, 120, np.random.default_rng(5))
    two_level = mean_cosine(points, labels, centroids)
    flat = mean_cosine(points, flat_labels, flat_centroids)
    assert two_level > 0.95 * flat
    # the refinement is what closes most of the gap: without it the result is worse
    unrefined = routing.REFINE_ITERATIONS
    try:
        routing.REFINE_ITERATIONS = 0
        raw_labels, raw_centroids = two_level_kmeans(points, 120, np.random.default_rng(5))
    finally:
        routing.REFINE_ITERATIONS = unrefined
    assert two_level > mean_cosine(points, raw_labels, raw_centroids)


def test_two_level_kmeans_is_deterministic_and_handles_k_equal_n() -> None:
    points = planted(500, 30, 16, 0.8, seed=6)
    first = two_level_kmeans(points, 30, np.random.default_rng(7))
    second = two_level_kmeans(points, 30, np.random.default_rng(7))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    few = points[:40]
    labels, _ = two_level_kmeans(few, 100, np.random.default_rng(7))  # k capped at n
    assert sorted(set(labels.tolist())) == list(range(40))


def test_cluster_points_is_flat_below_the_threshold_and_two_level_above(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points = planted(900, 20, 16, 0.8, seed=8)
    flat = spherical_kmeans(points, 20, np.random.default_rng(9))
    below = cluster_points(points, 20, np.random.default_rng(9))
    assert np.array_equal(below[0], flat[0]) and np.array_equal(below[1], flat[1])
    monkeypatch.setattr(routing, "FLAT_KMEANS_CELLS", 900 * 20 - 1)
    above = cluster_points(points, 20, np.random.default_rng(9))
    two_level = two_level_kmeans(points, 20, np.random.default_rng(9))
    assert np.array_equal(above[0], two_level[0])
    assert not np.array_equal(above[0], flat[0])

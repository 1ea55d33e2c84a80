"""Routing maths: spherical k-means for router initialisation, nearest-router assignment for
perception, and threshold / top-k recipient selection for multicast.

Pipeline position: pure numpy functions called by ``recnet.world.build`` (initial K routers) and by
the forward phase (steps 2 and 4). No agent objects here, only matrices of unit vectors.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def spherical_kmeans(
    points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster unit row vectors by cosine. Returns ``(labels, unit centroids)``.

    k-means++ seeding from ``rng``; empty clusters are re-seeded with the point farthest from its
    centroid, so exactly ``min(k, n)`` non-empty clusters come back.
    """
    n = points.shape[0]
    if n == 0:
        raise ValueError("cannot cluster zero points")
    k = min(k, n)
    centroids = _kmeanspp(points, k, rng)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iterations):
        new_labels, best = nearest_centroids(points, centroids)
        reseed_empty(new_labels, best, k)
        if np.array_equal(new_labels, labels) and _ > 0:
            break
        labels = new_labels
        centroids = unit_rows(cluster_sums(points, labels, k))
    return labels, centroids


def reseed_empty(labels: np.ndarray, best: np.ndarray, k: int) -> None:
    """Give each of the ``k`` clusters that no point chose the point farthest from its centroid
    (``best``: each point's similarity to it), in place."""
    counts = np.bincount(labels, minlength=k)
    for empty in np.flatnonzero(counts == 0):
        worst = int(best.argmin())
        labels[worst] = empty
        best[worst] = np.inf  # a re-seeded point is not taken again by the next empty one


#: Above this many point × centroid cells (about 10 s of flat clustering on a 2-core machine),
#: ``cluster_points`` clusters in two levels: flat k-means costs points × k per iteration, and
#: with k growing with the world (one router per 25 users) that is quadratic in its size.
FLAT_KMEANS_CELLS = 1 << 26
#: ``two_level_kmeans``'s refinement: a point may move to one of the clusters most similar to
#: its own (it included), for at most this many iterations.
NEIGHBOUR_CENTROIDS = 64
REFINE_ITERATIONS = 25


def cluster_points(
    points: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster by ``spherical_kmeans`` up to ``FLAT_KMEANS_CELLS`` point × centroid cells, by
    ``two_level_kmeans`` above (a 300k-agent world's 240k attributes into 4,000 routers)."""
    if points.shape[0] * min(k, points.shape[0]) <= FLAT_KMEANS_CELLS:
        return spherical_kmeans(points, k, rng)
    return two_level_kmeans(points, k, rng)


def two_level_kmeans(
    points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster into ~√k groups, then each group into its share of the k clusters (shares
    proportional to group sizes, at least one each), then refine across the groups. Costs
    ~2·√k + ``NEIGHBOUR_CENTROIDS`` instead of k similarities per point and iteration; returns
    ``(labels, unit centroids)`` with exactly ``min(k, n)`` non-empty clusters, like
    ``spherical_kmeans``."""
    n = points.shape[0]
    k = min(k, n)
    group_labels, _ = spherical_kmeans(points, max(1, round(np.sqrt(k))), rng, iterations)
    sizes = np.bincount(group_labels)
    shares = proportional_shares(sizes, k)
    bounds = np.concatenate([[0], np.cumsum(shares)])
    labels = np.empty(n, dtype=np.int64)
    centroids = np.empty((k, points.shape[1]), dtype=points.dtype)
    for group, share in enumerate(shares.tolist()):
        members = np.flatnonzero(group_labels == group)
        sub_labels, sub_centroids = spherical_kmeans(points[members], share, rng, iterations)
        labels[members] = sub_labels + bounds[group]
        centroids[bounds[group] : bounds[group + 1]] = sub_centroids
    # Lloyd refinement across group borders, each point choosing among its cluster's
    # ``NEIGHBOUR_CENTROIDS`` most similar centroids (a true cluster split between two groups
    # merges back)
    for _ in range(REFINE_ITERATIONS):
        neighbours = nearest_neighbours(centroids, NEIGHBOUR_CENTROIDS)
        new_labels, best = nearest_among_neighbours(points, labels, centroids, neighbours)
        reseed_empty(new_labels, best, k)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        centroids = unit_rows(cluster_sums(points, labels, k))
    return labels, centroids


def proportional_shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` (≤ ``sizes.sum()``) into integer shares proportional to ``sizes``, each
    between 1 and its size (largest remainders first; ties: the earlier group)."""
    if not len(sizes) <= total <= int(sizes.sum()):
        raise ValueError(f"cannot split {total} over {len(sizes)} groups of {sizes.sum()}")
    quota = sizes * (total / sizes.sum())
    shares = np.clip(np.floor(quota).astype(np.int64), 1, sizes)
    while (missing := total - int(shares.sum())) != 0:
        room = shares < sizes if missing > 0 else shares > 1
        gap = np.where(room, quota - shares, -np.inf if missing > 0 else np.inf)
        order = np.argsort(-gap if missing > 0 else gap, kind="stable")
        step = 1 if missing > 0 else -1
        take = order[: min(abs(missing), int(room.sum()))]
        shares[take] += step
    return shares


#: Entries of one block of the points × centroids similarity matrix (16 MB of float32): a 300k-agent
#: world clusters ~2·10^5 attributes into 4,000 routers, whose whole matrix would take 3.2 GB.
KMEANS_CELLS = 1 << 22


def nearest_centroids(
    points: np.ndarray, centroids: np.ndarray, cells: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each point's most similar centroid and that similarity, computed over blocks of points
    whose similarity matrix holds about ``cells`` (default ``KMEANS_CELLS``) entries; inputs
    below that size are one block."""
    cells = KMEANS_CELLS if cells is None else cells
    n = points.shape[0]
    labels = np.empty(n, dtype=np.int64)
    best = np.empty(n, dtype=np.result_type(points.dtype, centroids.dtype))
    rows = max(1, cells // max(centroids.shape[0], 1))
    for start in range(0, n, rows):
        similarity = points[start : start + rows] @ centroids.T
        block = similarity.argmax(axis=1)
        labels[start : start + rows] = block
        best[start : start + rows] = similarity[np.arange(len(block)), block]
    return labels, best


def nearest_neighbours(vectors: np.ndarray, m: int) -> np.ndarray:
    """``(n, min(m, n))``: each row's ``m`` most similar rows (itself included), by blocks."""
    n = vectors.shape[0]
    m = min(m, n)
    out = np.empty((n, m), dtype=np.int64)
    rows = max(1, KMEANS_CELLS // max(n, 1))
    for start in range(0, n, rows):
        similarity = vectors[start : start + rows] @ vectors.T
        out[start : start + rows] = np.argpartition(-similarity, m - 1, axis=1)[:, :m]
    return out


def nearest_among_neighbours(
    points: np.ndarray, labels: np.ndarray, centroids: np.ndarray, neighbours: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each point's most similar centroid among ``neighbours[its label]`` (centroid indices),
    and that similarity: one small product per cluster, since a cluster's points share their
    candidates."""
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=len(neighbours)))])
    new_labels = np.empty_like(labels)
    best = np.empty(points.shape[0], dtype=points.dtype)
    for c in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():
        rows = order[bounds[c] : bounds[c + 1]]
        similarity = points[rows] @ centroids[neighbours[c]].T
        column = similarity.argmax(axis=1)
        new_labels[rows] = neighbours[c][column]
        best[rows] = similarity[np.arange(len(rows)), column]
    return new_labels, best


def cluster_sums(points: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Row ``c`` = the sum of the points labelled ``c``, added in point order (bit for bit what
    ``np.add.at`` gives) as one sparse one-hot product instead of ``np.add.at``'s slow loop."""
    n = points.shape[0]
    one_hot = sparse.csr_matrix(
        (np.ones(n, dtype=points.dtype), (labels, np.arange(n))), shape=(k, n)
    )
    one_hot.sort_indices()
    return np.asarray(one_hot @ points, dtype=points.dtype)


def _kmeanspp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = points.shape[0]
    chosen = [int(rng.integers(n))]
    distance = 1.0 - points @ points[chosen[0]]
    for _ in range(1, k):
        weights = np.clip(distance, 0.0, None) ** 2
        total = weights.sum()
        index = int(rng.choice(n, p=weights / total)) if total > 0 else int(rng.integers(n))
        chosen.append(index)
        distance = np.minimum(distance, 1.0 - points @ points[index])
    return points[chosen].copy()


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms


def nearest_router(
    attribute_vectors: np.ndarray, router_vectors: np.ndarray, min_score: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Perception: ``argmax_R cos(e_a, e_R)`` per attribute row.

    Returns ``(router positions, scores)``; a position of -1 marks attributes whose best score is
    not above ``min_score`` (no router is responsible for them).
    """
    if router_vectors.shape[0] == 0 or attribute_vectors.shape[0] == 0:
        empty = np.full(attribute_vectors.shape[0], -1, dtype=np.int64)
        return empty, np.zeros(attribute_vectors.shape[0], dtype=np.float32)
    similarity = attribute_vectors @ router_vectors.T
    best = similarity.argmax(axis=1)
    scores = similarity[np.arange(similarity.shape[0]), best]
    best = np.where(scores > min_score, best, -1)
    return best, scores


def select_recipients(
    scores: np.ndarray,
    *,
    tau: float,
    max_recipients: int,
    top_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Multicast recipients from one sender's cosine scores against every client.

    Clients with ``score >= tau`` (or the ``top_k`` best when given), at most ``max_recipients``,
    highest score first (ties: lower position first). Returns ``(positions, scores)``; ``-inf``
    scores (excluded clients) are never chosen.
    """
    if top_k is not None:
        limit = min(top_k, max_recipients, int(np.isfinite(scores).sum()))
        if limit <= 0:
            return np.array([], dtype=np.int64), np.array([], dtype=scores.dtype)
        candidates = np.argpartition(-scores, limit - 1)[:limit]
    else:
        candidates = np.flatnonzero(scores >= tau)
        if candidates.shape[0] > max_recipients:
            part = np.argpartition(-scores[candidates], max_recipients - 1)[:max_recipients]
            candidates = candidates[part]
    order = np.lexsort((candidates, -scores[candidates]))
    chosen = candidates[order]
    return chosen, scores[chosen]

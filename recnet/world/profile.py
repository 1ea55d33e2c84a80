"""Weighted attribute maps: the numeric form of a profile, and their rendering to text.

Pipeline position: the data every agent holds. An attribute is ``"<category>:<value>"`` (for
example ``"genre:comedy"``, ``"tag:dark humor"``, ``"era:1990s"``, ``"title:heat"``); its weight
says how strongly the agent leans towards it (negative = dislike). The offline brain does
arithmetic on these maps; the LLM brain reads and writes the rendered text and extracts
attributes back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

Weights = dict[str, float]


def norm(weights: Mapping[str, float]) -> float:
    """Euclidean norm of a weight map."""
    return math.hypot(*weights.values())


def normalized(weights: Mapping[str, float]) -> Weights:
    """The map scaled to unit Euclidean norm (an empty or zero map stays empty)."""
    n = norm(weights)
    if n == 0.0:
        return {}
    return {a: w / n for a, w in weights.items()}


def dot(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Sparse dot product (iterates over the smaller map)."""
    if len(a) > len(b):
        a, b = b, a
    return sum(w * b[k] for k, w in a.items() if k in b)


def cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Cosine similarity of two weight maps (0 when either is empty)."""
    na, nb = norm(a), norm(b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return dot(a, b) / (na * nb)


def add_scaled(base: Mapping[str, float], delta: Mapping[str, float], scale: float) -> Weights:
    """``base + scale * delta`` as a new map."""
    result = dict(base)
    get = result.get
    for a, w in delta.items():
        result[a] = get(a, 0.0) + scale * w
    return result


def blend(base: Mapping[str, float], other: Mapping[str, float], rate: float) -> Weights:
    """Exponential moving average ``(1 - rate) * base + rate * other``."""
    result = {a: (1.0 - rate) * w for a, w in base.items()}
    for a, w in other.items():
        result[a] = result.get(a, 0.0) + rate * w
    return result


def top(weights: Mapping[str, float], size: int, min_abs: float = 1e-6) -> Weights:
    """Keep the ``size`` attributes with the largest absolute weight, dropping near-zero ones.

    Kept attributes keep their insertion order; ties at the cut go to the earlier attribute
    (deterministic, since maps are built in a deterministic order).
    """
    if len(weights) > size:
        cut = max(sorted(map(abs, weights.values()), reverse=True)[size - 1], min_abs)
        kept = {a: w for a, w in weights.items() if w >= cut or w <= -cut}
        if len(kept) <= size:
            return kept
        ranked = sorted(kept, key=lambda a: abs(kept[a]), reverse=True)[:size]  # ties at the cut
        chosen = set(ranked)
        return {a: w for a, w in kept.items() if a in chosen}
    return {a: w for a, w in weights.items() if w >= min_abs or w <= -min_abs}


def changes(before: Mapping[str, float], after: Mapping[str, float], size: int) -> Weights:
    """The ``size`` largest signed weight changes from ``before`` to ``after``."""
    delta: Weights = {}
    for a, w in after.items():
        d = w - before.get(a, 0.0)
        if d > 1e-9 or d < -1e-9:
            delta[a] = d
    for a, w in before.items():
        if a not in after:
            delta[a] = -w
    return top(delta, size, min_abs=1e-9)


def category(attribute: str) -> str:
    """The category of an attribute (the part before the first ':'; 'misc' when absent)."""
    head, sep, _ = attribute.partition(":")
    return head if sep else "misc"


def value(attribute: str) -> str:
    """The value of an attribute (the part after the first ':')."""
    head, sep, rest = attribute.partition(":")
    return rest if sep else head


def group_by_category(attributes: Iterable[str]) -> dict[str, list[str]]:
    """``{"genre": ["comedy", ...], ...}`` as the extract operation returns it."""
    groups: dict[str, list[str]] = {}
    for attribute in attributes:
        groups.setdefault(category(attribute), []).append(value(attribute))
    return groups


def render(weights: Mapping[str, float], limit: int = 12, strong: float = 0.0) -> str:
    """Render a weight map as a short preference text, strongest first.

    ``"Likes: genre comedy (0.62), era 1990s (0.31). Dislikes: genre horror (-0.20)."``
    """
    if not weights:
        return "No stated preferences yet."
    ranked = sorted(weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:limit]
    likes = [f"{category(a)} {value(a)} ({w:.2f})" for a, w in ranked if w > strong]
    dislikes = [f"{category(a)} {value(a)} ({w:.2f})" for a, w in ranked if w < -strong]
    parts = []
    if likes:
        parts.append("Likes: " + ", ".join(likes) + ".")
    if dislikes:
        parts.append("Dislikes: " + ", ".join(dislikes) + ".")
    return " ".join(parts) or "No stated preferences yet."

"""The numbers behind the method, each written once: effective profile, preference score,
popularity prior, router averaging and the propagated-profile merge.

Pipeline position: shared by both brains (``recnet.brain.offline``, ``recnet.brain.llm``: an LLM
brain keeps weights next to its texts with the same formulas), credit assignment
(``recnet.brain.credit``), the forward phase and evaluation. Changing a formula here changes it for
every one of them, so credit assignment can never drift from the merge or the score it explains.
``recnet.brain.scoring.OfflineScorer.score_lists`` is the vectorised form of ``preference_score``
(sparse numpy) for validation lists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from recnet.world.buffer import RouterMessage
from recnet.world.profile import Weights, add_scaled, dot, norm, normalized, top


class Profiled(Protocol):
    """What the merge reads of a client: its two profiles (a ``ClientAgent`` or plain data)."""

    @property
    def original(self) -> Mapping[str, float]: ...

    @property
    def propagated(self) -> Mapping[str, float]: ...


def effective_profile(
    original: Mapping[str, float], propagated: Mapping[str, float], propagated_weight: float
) -> Mapping[str, float]:
    """The profile an agent acts with: original + ``propagated_weight`` × propagated (the
    original map itself when nothing propagated counts)."""
    if not propagated or propagated_weight == 0.0:
        return original
    return add_scaled(original, propagated, propagated_weight)


def preference_score(
    user: Mapping[str, float],
    user_norm: float,
    item: Mapping[str, float],
    popularity: float,
    popularity_weight: float,
) -> float:
    """cos(user, item) of effective profiles (0 when either is empty) + weight × popularity."""
    denominator = user_norm * norm(item)
    similarity = dot(user, item) / denominator if denominator else 0.0
    return similarity + popularity_weight * popularity


def popularity_prior(count: int, max_count: int) -> float:
    """Popularity prior in [0, 1]: ``log(1 + count) / log(1 + max_count)`` (0 before any choice)."""
    if max_count == 0:
        return 0.0
    return math.log1p(count) / math.log1p(max_count)


def popularity_priors(counts: np.ndarray, max_count: int) -> np.ndarray:
    """``popularity_prior`` of many counts at once, bit for bit the scalar's values (it looks them
    up in a table of the scalar formula, one entry per count up to ``max_count``)."""
    if max_count == 0:
        return np.zeros(len(counts), dtype=np.float64)
    table = np.fromiter(
        (popularity_prior(c, max_count) for c in range(max_count + 1)), np.float64, max_count + 1
    )
    return table[counts]


def router_average(
    profile: Mapping[str, float], routed: Mapping[str, float], ema: float, size: int
) -> Weights:
    """A router's new profile: exponential moving average of its profile and the normalised
    routed changes, positive weights only, the ``size`` strongest, normalised."""
    blended = add_scaled({a: (1.0 - ema) * w for a, w in profile.items()}, normalized(routed), ema)
    kept = {a: w for a, w in blended.items() if w > 0}
    return normalized(top(kept, size))


def fold_messages(
    client: Profiled,
    accepted: Sequence[RouterMessage],
    damping: float,
    share: float,
    size: int,
) -> Weights:
    """The propagated profile after taking in ``accepted``: each sending step's messages, oldest
    first, as one damped, score-weighted mean (``(1 - d) * P + d * |original| * mean``), capped
    by the max-share rule and cut to ``size`` attributes. A buffer that waited several steps (lazy
    merge) therefore ends where merging at each step's end would have ended."""
    by_step: dict[int, list[RouterMessage]] = {}
    for message in accepted:
        by_step.setdefault(message.step, []).append(message)
    scale = norm(client.original)
    propagated = dict(client.propagated)
    for step in sorted(by_step):
        incoming = score_weighted_mean(by_step[step])
        propagated = {a: (1.0 - damping) * w for a, w in propagated.items()}
        for a, w in incoming.items():
            propagated[a] = propagated.get(a, 0.0) + damping * scale * w
        if share < 1.0:
            cap = share / (1.0 - share) * scale
            current = norm(propagated)
            if current > cap:
                factor = cap / current if current else 0.0
                propagated = {a: w * factor for a, w in propagated.items()}
        propagated = top(propagated, size)
    return propagated


def score_weighted_mean(messages: Sequence[RouterMessage]) -> Weights:
    """Mean of the messages' router profiles, weighted by routing score (always a new map: the
    messages' attribute snapshots are shared by every recipient and must stay untouched)."""
    if len(messages) == 1:
        return dict(messages[0].attributes)
    total = 0.0
    incoming: Weights = {}
    get = incoming.get
    for message in messages:
        weight = max(message.score, 1e-3)
        total += weight
        for a, w in message.attributes.items():
            incoming[a] = get(a, 0.0) + weight * w
    return {a: w / total for a, w in incoming.items()}

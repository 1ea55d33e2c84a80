"""The ``Scorer`` protocol every baseline implements, and scoring a split's candidate lists.

Pipeline position: after the split and candidate sampling (``recnet.eval.protocol``), beside the
agent brains. A scorer is fitted on training interactions only, then scores each user's candidate
list; ``evaluate_scorer`` turns the scores into ranks and metrics (``recnet.eval.metrics``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from recnet.data.types import Interaction
from recnet.eval.metrics import rank_of_true, summarize
from recnet.eval.protocol import CandidateSet, Split, Which, true_index


@runtime_checkable
class Scorer(Protocol):
    """A recommender that scores candidate items for a user (higher = better)."""

    name: str

    def fit(self, train: Sequence[Interaction], item_ids: Sequence[str]) -> None:
        """Learn from training interactions; ``item_ids`` is the whole item catalogue."""
        ...

    def score(self, user: str, candidates: Sequence[str]) -> np.ndarray:
        """One float per candidate, in candidate order."""
        ...


@dataclass(slots=True)
class EncodedTrain:
    """Training interactions as integer arrays (one row per interaction, repeats kept)."""

    users: list[str]
    user_index: dict[str, int]
    items: list[str]
    item_index: dict[str, int]
    user_codes: np.ndarray
    item_codes: np.ndarray


def encode_train(train: Iterable[Interaction], item_ids: Sequence[str]) -> EncodedTrain:
    """Integer codes for users (order of first appearance) and items (catalogue order first).

    Items that occur in ``train`` but not in ``item_ids`` are appended to the catalogue.
    """
    items = list(dict.fromkeys(item_ids))
    item_index = {item: i for i, item in enumerate(items)}
    user_index: dict[str, int] = {}
    u_codes: list[int] = []
    i_codes: list[int] = []
    for inter in train:
        u = user_index.setdefault(inter.user, len(user_index))
        i = item_index.get(inter.item)
        if i is None:
            i = item_index[inter.item] = len(items)
            items.append(inter.item)
        u_codes.append(u)
        i_codes.append(i)
    return EncodedTrain(
        users=list(user_index),
        user_index=user_index,
        items=items,
        item_index=item_index,
        user_codes=np.asarray(u_codes, dtype=np.int64),
        item_codes=np.asarray(i_codes, dtype=np.int64),
    )


def candidate_codes(item_index: dict[str, int], candidates: Sequence[str]) -> np.ndarray:
    """Catalogue codes of ``candidates``; -1 for items the scorer never saw."""
    return np.fromiter(
        (item_index.get(c, -1) for c in candidates), dtype=np.int64, count=len(candidates)
    )


def evaluate_scorer(
    scorer: Scorer,
    split: Split,
    candidates: CandidateSet,
    ks: Iterable[int],
    *,
    which: Which = "test",
) -> tuple[dict[str, float], dict[str, int]]:
    """Score every user's candidate list with a fitted scorer; return (metric summary, ranks).

    Users are taken from ``candidates`` (sorted), their true item from ``split`` (``which``).
    """
    truth = split.held_out(which)
    ranks: dict[str, int] = {}
    for user in sorted(candidates):
        cands = candidates[user]
        scores = np.asarray(scorer.score(user, cands), dtype=np.float64)
        if scores.shape != (len(cands),):
            raise ValueError(
                f"scorer {scorer.name!r} returned {scores.shape} scores for "
                f"{len(cands)} candidates of user {user!r}"
            )
        ranks[user] = rank_of_true(scores, true_index(cands, truth[user].item))
    if not ranks:
        raise ValueError("no candidate lists to evaluate")
    return summarize(np.fromiter(ranks.values(), dtype=np.int64), ks), ranks

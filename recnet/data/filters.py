"""Scenario filters applied to a loaded ``Dataset``, in a fixed order.

Pipeline position: between the loaders (``movielens``, ``recbole``, ``synthetic``) and the
evaluation split; ``recnet.data.load.load_dataset`` calls ``apply_filters``. Order:
``min_rating`` → ``max_users`` (seeded subsample) → ``max_interactions_per_user`` (most recent
N) → ``short_users`` (users with fewer than ``MIN_USER_INTERACTIONS`` interactions: error or
drop). The item catalogue is kept whole (negatives are sampled from it); candidates and ground
truth are restricted to the remaining users.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from operator import attrgetter

import numpy as np

from recnet.config.scenario import DatasetSettings
from recnet.data.types import Dataset, DriftEvent, GroundTruth, Interaction, Item
from recnet.errors import DatasetError

MIN_USER_INTERACTIONS = 3  # leave-one-out needs train, validation and test interactions
SUBSAMPLE_STREAM = 0x5AB5_A3E1  # separates the user subsample from other uses of the seed


def sort_chronologically(interactions: list[Interaction]) -> list[Interaction]:
    """Sorted by timestamp; ties keep their current (file) order."""
    return sorted(interactions, key=attrgetter("timestamp"))


def ensure_items(interactions: list[Interaction], items: dict[str, Item]) -> dict[str, Item]:
    """``items`` plus a bare ``Item`` (title = id) for every interacted item without metadata."""
    missing = set(map(attrgetter("item"), interactions)) - items.keys()
    if not missing:
        return items
    out = dict(items)
    for item_id in sorted(missing):
        out[item_id] = Item(item_id, item_id)
    return out


def _check_not_empty(interactions: list[Interaction], name: str, what: str, remedy: str) -> None:
    if not interactions:
        raise DatasetError(f"dataset {name} has no interactions left after {what}", remedy)


def filter_min_rating(interactions: list[Interaction], min_rating: float) -> list[Interaction]:
    """Keep ratings >= ``min_rating``; unrated (implicit) interactions count as positive."""
    return [i for i in interactions if i.rating is None or i.rating >= min_rating]


def subsample_users(
    interactions: list[Interaction], max_users: int, seed: int
) -> list[Interaction]:
    """Keep a seeded random subset of ``max_users`` users (all of them if there are fewer)."""
    users = list(dict.fromkeys(i.user for i in interactions))
    if len(users) <= max_users:
        return interactions
    rng = np.random.default_rng(np.random.SeedSequence([seed, SUBSAMPLE_STREAM]))
    chosen = np.sort(rng.choice(len(users), size=max_users, replace=False))
    keep = {users[k] for k in chosen.tolist()}
    return [i for i in interactions if i.user in keep]


def keep_recent(interactions: list[Interaction], per_user: int) -> list[Interaction]:
    """Keep each user's ``per_user`` most recent interactions (input is chronological)."""
    counts: Counter[str] = Counter()
    keep = [False] * len(interactions)
    for k in range(len(interactions) - 1, -1, -1):
        user = interactions[k].user
        if counts[user] < per_user:
            counts[user] += 1
            keep[k] = True
    return [i for i, kept in zip(interactions, keep, strict=True) if kept]


def short_users(interactions: list[Interaction]) -> list[str]:
    """Users with fewer than ``MIN_USER_INTERACTIONS`` interactions, in order of appearance."""
    counts = Counter(map(attrgetter("user"), interactions))  # keeps first-appearance order
    return [u for u, n in counts.items() if n < MIN_USER_INTERACTIONS]


def _restrict_truth(truth: GroundTruth | None, users: set[str]) -> GroundTruth | None:
    if truth is None:
        return None
    return GroundTruth(
        user_community={u: c for u, c in truth.user_community.items() if u in users},
        item_community=dict(truth.item_community),
        community_attributes=dict(truth.community_attributes),
        drifts=[
            DriftEvent(
                d.timestamp,
                d.community,
                d.from_attributes,
                d.to_attributes,
                tuple(u for u in d.users if u in users),
                None if d.adoption is None else {u: t for u, t in d.adoption.items() if u in users},
            )
            for d in truth.drifts
        ],
        user_taste={u: t for u, t in truth.user_taste.items() if u in users},
        item_release=dict(truth.item_release),
        item_weight=dict(truth.item_weight),
    )


def _restrict_candidates(
    candidates: dict[str, list[str]] | None, interactions: list[Interaction], name: str
) -> dict[str, list[str]] | None:
    if candidates is None:
        return None
    last = {i.user: i.item for i in interactions}
    kept = {u: c for u, c in candidates.items() if u in last}
    moved = [u for u, c in kept.items() if c[0] != last[u]]
    if moved:
        raise DatasetError(
            f"dataset {name}: the filters removed the test item of {len(moved)} user(s) with "
            f"pre-sampled candidates (e.g. {', '.join(moved[:5])})",
            "drop dataset.min_rating when the dataset ships candidate lists, or remove its "
            "candidate file to let recnet sample candidates",
        )
    return kept


def apply_filters(dataset: Dataset, settings: DatasetSettings, seed: int) -> Dataset:
    """Apply the scenario's filters (module docstring) and return a new ``Dataset``."""
    name = dataset.name
    inters = sort_chronologically(dataset.interactions)
    _check_not_empty(inters, name, "loading", "check the data files: they hold no interactions")
    if settings.min_rating is not None:
        inters = filter_min_rating(inters, settings.min_rating)
        _check_not_empty(
            inters,
            name,
            f"dataset.min_rating={settings.min_rating}",
            "lower dataset.min_rating (ratings below it are dropped)",
        )
    if settings.max_users is not None:
        inters = subsample_users(inters, settings.max_users, seed)
    if settings.max_interactions_per_user is not None:
        inters = keep_recent(inters, settings.max_interactions_per_user)
    short = short_users(inters)
    if short and settings.short_users == "error":
        raise DatasetError(
            f"dataset {name}: {len(short)} user(s) have fewer than {MIN_USER_INTERACTIONS} "
            f"interactions and cannot be split leave-one-out (e.g. {', '.join(short[:5])})",
            "add --set dataset.short_users=drop to drop them",
        )
    if short:
        dropped = set(short)
        inters = [i for i in inters if i.user not in dropped]
        _check_not_empty(
            inters,
            name,
            "dataset.short_users=drop",
            f"every user has fewer than {MIN_USER_INTERACTIONS} interactions after the other "
            "filters: relax dataset.min_rating / dataset.max_interactions_per_user",
        )
    items = ensure_items(dataset.interactions, dataset.items)  # the whole catalogue
    if not items:
        raise DatasetError(f"dataset {name} has no items", "check the item and interaction files")
    users = {i.user for i in inters}
    return replace(
        dataset,
        interactions=inters,
        items=items,
        candidates=_restrict_candidates(dataset.candidates, inters, name),
        ground_truth=_restrict_truth(dataset.ground_truth, users),
    )

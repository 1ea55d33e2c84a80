"""The in-memory dataset every loader produces and every later stage reads.

Pipeline position: loaders (``movielens``, ``recbole``, ``synthetic``) → ``Dataset`` → split and
candidate sampling (``recnet.eval.protocol``) → world building (``recnet.world``).
Identifiers are strings so that RecBole tokens, MovieLens ids and synthetic names share one type.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user choosing one item at a time (``timestamp`` orders; ties keep file order)."""

    user: str
    item: str
    timestamp: int
    rating: float | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """Item metadata from which item agents build their initial profile."""

    item_id: str
    title: str
    genres: tuple[str, ...] = ()
    year: int | None = None
    tags: tuple[str, ...] = ()  # most frequent first, de-duplicated, lower-cased


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """Synthetic ground truth: at ``step_time`` the users of ``community`` shift their taste."""

    timestamp: int
    community: int
    from_attributes: tuple[str, ...]
    to_attributes: tuple[str, ...]
    users: tuple[str, ...]  # who should learn about the shift
    #: user → when that member adopts the new taste (staggered adoption); members absent from it
    #: never adopt. None = every member adopts at ``timestamp``.
    adoption: dict[str, int] | None = None

    def adopted_at(self, user: str) -> int | None:
        """When ``user`` adopts this drift (None: never)."""
        if self.adoption is None:
            return self.timestamp if user in self.users else None
        return self.adoption.get(user)


@dataclass(slots=True)
class GroundTruth:
    """What the synthetic generator planted, kept to evaluate propagation."""

    user_community: dict[str, int]
    item_community: dict[str, int]
    community_attributes: dict[int, tuple[str, ...]]
    drifts: list[DriftEvent] = field(default_factory=list)
    #: user → [(from timestamp, community whose items the user prefers)], in time order; the
    #: true current taste an oracle knows (empty when the generator did not record it).
    user_taste: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    item_release: dict[str, int] = field(default_factory=dict)  # cold items: first choosable time
    #: item → its weight among its community's items when a user of that taste chooses (the
    #: generator's popularity skew); with ``taste_at`` what a Bayes-optimal oracle ranks by
    item_weight: dict[str, float] = field(default_factory=dict)

    def taste_at(self, user: str, timestamp: int) -> int:
        """The community whose items ``user`` prefers at ``timestamp``."""
        current = self.user_community[user]
        for start, community in self.user_taste.get(user, ()):
            if start <= timestamp:
                current = community
            else:
                break
        return current


@dataclass(slots=True)
class Dataset:
    """Interactions sorted by (timestamp, file order), item metadata and optional extras.

    ``candidates`` holds pre-sampled evaluation lists (RecBole ``.random`` files): user →
    candidate item ids with the true test item first. When absent, the evaluation protocol samples
    them from ``seed``.
    """

    name: str
    interactions: list[Interaction]
    items: dict[str, Item]
    candidates: dict[str, list[str]] | None = None
    ground_truth: GroundTruth | None = None
    source: str = ""  # where it was read from (path or "synthetic"), for the run record

    @property
    def users(self) -> list[str]:
        """User ids in order of first appearance."""
        return list(dict.fromkeys(i.user for i in self.interactions))

"""Item content → initial item attributes and item description text.

Pipeline position: initialisation. The offline brain uses ``item_attributes`` directly as the
result of the *extract* operation; the LLM brain sends ``item_description`` to its *extract* prompt.
"""

from __future__ import annotations

from sys import intern

from recnet.data.types import Item
from recnet.world.profile import Weights

GENRE_WEIGHT = 1.0
ERA_WEIGHT = 0.5
TITLE_WEIGHT = 1.0
TAG_WEIGHTS = (0.8, 0.6, 0.5, 0.4, 0.3)  # by tag rank; later tags get the last weight
MAX_TAGS = 8


def era(year: int | None) -> str | None:
    """``"1990s"`` for 1994; None when unknown."""
    if year is None:
        return None
    return f"{(year // 10) * 10}s"


def item_attributes(item: Item, with_title: bool = True) -> Weights:
    """Attributes of an item from its metadata.

    With ``with_title`` the item's own title is an attribute too, so that users who chose it carry
    it in their profiles and collaborative signal can flow through profiles (an LLM profile would
    name films a user loved in the same way).

    Shared attribute names are interned: every item naming a genre holds the same string object,
    not a copy of its own (3.1M copies, 205 MB, in a 1M-agent synthetic world; and a checkpoint's
    pickler memoises each object once).
    """
    weights: Weights = {}
    for genre in item.genres:
        weights[intern(f"genre:{genre.lower()}")] = GENRE_WEIGHT
    for rank, tag in enumerate(item.tags[:MAX_TAGS]):
        weights.setdefault(intern(f"tag:{tag}"), TAG_WEIGHTS[min(rank, len(TAG_WEIGHTS) - 1)])
    decade = era(item.year)
    if decade:
        weights[intern(f"era:{decade}")] = ERA_WEIGHT
    if with_title:
        weights[f"title:{item.title.lower()}"] = TITLE_WEIGHT
    return weights


def item_description(item: Item) -> str:
    """A short text for LLM prompts: title, year, genres, tags."""
    parts = [item.title + (f" ({item.year})" if item.year else "")]
    if item.genres:
        parts.append("genres: " + ", ".join(item.genres))
    if item.tags:
        parts.append("tags: " + ", ".join(item.tags[:MAX_TAGS]))
    return "; ".join(parts)

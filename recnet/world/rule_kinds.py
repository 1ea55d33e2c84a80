"""Executable filter rule kinds: the text of each, how that text parses back, what it decides.

Pipeline position: the vocabulary of ``recnet.world.rules`` (filter memories, forward step 5) and
of the backward phase's rule edits. Each kind is registered by name in
``recnet.registry.FILTER_RULES``; a rule's executable form is ``{"kind": name, param: value}``.
A new kind is one module that defines a ``RuleKind`` and registers it (or an entry point in the
``recnet.filter_rules`` group); rules of kinds nobody registered are text rules only LLMs apply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from recnet.world.buffer import RouterMessage
from recnet.world.profile import cosine

Decision = Literal["accepted", "rejected", "dropped"]
NUMBER = r"(-?\d+(?:\.\d+)?)"


@dataclass(frozen=True, slots=True)
class RuleKind:
    """One executable kind with a single numeric parameter ``param``.

    ``text(value)`` writes the canonical wording; ``pattern`` finds the number in such a wording
    and ``from_text`` turns it into the parameter (None: the text is not of this kind);
    ``decide(message, now, profile, value)`` objects to a message (a decision) or lets it pass
    (None). A kind without ``decide`` (``max_share``) is read by the merge, not per message.
    """

    name: str
    param: str
    text: Callable[[float], str]
    pattern: re.Pattern[str]
    from_text: Callable[[float], float | None] = lambda value: value
    decide: Callable[[RouterMessage, int, Mapping[str, float], float], Decision | None] | None = (
        None
    )


def _conflicts(message: RouterMessage, profile: Mapping[str, float], threshold: float) -> bool:
    """Does the message promote an attribute the client dislikes beyond ``threshold``?"""
    if not profile or min(profile.values()) >= -threshold:
        return False  # no strong dislike at all: the common case, checked at C speed
    promoted = message.attributes
    return any(
        weight < -threshold and promoted.get(attribute, 0.0) > 0
        for attribute, weight in profile.items()
    )


def relevance(message: RouterMessage, profile: Mapping[str, float]) -> float:
    """How close a message's content is to the client: cos(message attributes, own profile)."""
    return cosine(message.attributes, profile)


def _share(percent: float) -> float | None:
    value = percent / 100.0
    return value if 0.0 < value <= 1.0 else None


RECENCY = RuleKind(
    name="recency",
    param="max_age",
    text=lambda value: f"Drop community updates older than {int(value)} steps.",
    pattern=re.compile(rf"older than {NUMBER} steps?", re.IGNORECASE),
    decide=lambda message, now, profile, value: "dropped" if now - message.step > value else None,
)

MIN_RELEVANCE = RuleKind(
    name="min_relevance",
    param="threshold",
    text=lambda value: (
        f"Reject community updates whose similarity to my own profile is below {value:.2f}."
    ),
    pattern=re.compile(rf"similarity\b.*?\bbelow {NUMBER}", re.IGNORECASE | re.DOTALL),
    decide=lambda message, now, profile, value: (
        "rejected" if profile and relevance(message, profile) < value else None
    ),
)


def below_routing_score(
    message: RouterMessage, now: int, profile: Mapping[str, float], value: float
) -> Decision | None:
    """``min_relevance`` as it was before issue 9 (``world.filters.relevance: routing_score``).

    Compares the message's routing score (cos(router, client) at send time, or what the routing
    policy stored) rather than its content; routing only sends above tau, so it rarely rejects.
    """
    return "rejected" if profile and message.score < value else None


CONFLICT = RuleKind(
    name="conflict",
    param="threshold",
    text=lambda value: (
        "Reject community updates that promote something I clearly dislike "
        f"(my weight below -{value:.2f})."
    ),
    pattern=re.compile(rf"weight below -?{NUMBER}", re.IGNORECASE),
    from_text=abs,
    decide=lambda message, now, profile, value: (
        "rejected" if _conflicts(message, profile, value) else None
    ),
)

MAX_SHARE = RuleKind(
    name="max_share",
    param="share",
    text=lambda value: (
        f"Let community updates make up at most {100 * value:.0f}% of my propagated preferences."
    ),
    pattern=re.compile(rf"at most {NUMBER} ?%", re.IGNORECASE),
    from_text=_share,
)

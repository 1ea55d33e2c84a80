"""Filter memory: the ordered rules a client applies to buffered router messages.

Pipeline position: consulted in forward step 5 (reception) when a buffer flushes, rewritten in the
backward phase (optimize). Each rule has natural-language ``text`` (what an LLM reads and rewrites)
and, where recnet can execute it, a ``kind`` with ``params`` (what the offline brain applies).
Rules are immutable; changing a memory creates new rule objects, and clients share the default
memory until one of them is optimised (copy on write).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from recnet.config.scenario import FilterSettings
from recnet.world.buffer import RouterMessage

RuleKind = Literal["recency", "min_relevance", "conflict", "max_share", "text"]
Decision = Literal["accepted", "rejected", "dropped"]

EXECUTABLE_KINDS: tuple[RuleKind, ...] = ("recency", "min_relevance", "conflict", "max_share")


@dataclass(frozen=True, slots=True)
class FilterRule:
    """One rule. ``kind="text"`` rules are read by LLMs only; the offline brain skips them."""

    rule_id: str
    text: str
    kind: RuleKind = "text"
    params: Mapping[str, float] = field(default_factory=dict)
    version: int = 1

    def executable(self) -> dict[str, object] | None:
        """The executable form stored in the trace (None for text-only rules)."""
        if self.kind == "text":
            return None
        return {"kind": self.kind, **self.params}

    def with_params(self, **params: float) -> FilterRule:
        """A new version of this rule with updated parameters and regenerated text."""
        merged = {**self.params, **params}
        return replace(
            self, params=merged, text=describe(self.kind, merged), version=self.version + 1
        )


def describe(kind: RuleKind, params: Mapping[str, float]) -> str:
    """Natural-language text of an executable rule."""
    if kind == "recency":
        return f"Drop community updates older than {int(params['max_age'])} steps."
    if kind == "min_relevance":
        return (
            "Reject community updates whose similarity to my own profile is below "
            f"{params['threshold']:.2f}."
        )
    if kind == "conflict":
        return (
            "Reject community updates that promote something I clearly dislike "
            f"(my weight below -{params['threshold']:.2f})."
        )
    if kind == "max_share":
        return (
            "Let community updates make up at most "
            f"{100 * params['share']:.0f}% of my propagated preferences."
        )
    raise ValueError(f"rule kind {kind!r} has no generated text")


_NUMBER = r"(-?\d+(?:\.\d+)?)"
_RULE_PATTERNS: tuple[tuple[RuleKind, str, re.Pattern[str]], ...] = (
    ("recency", "max_age", re.compile(rf"older than {_NUMBER} steps?", re.IGNORECASE)),
    (
        "min_relevance",
        "threshold",
        re.compile(rf"similarity\b.*?\bbelow {_NUMBER}", re.IGNORECASE | re.DOTALL),
    ),
    ("conflict", "threshold", re.compile(rf"weight below -?{_NUMBER}", re.IGNORECASE)),
    ("max_share", "share", re.compile(rf"at most {_NUMBER} ?%", re.IGNORECASE)),
)


def parse_rule(text: str) -> tuple[RuleKind, dict[str, float]]:
    """The executable form of a rule text written like ``describe``'s, else ``("text", {})``.

    This is how an LLM-written rule stays executable: "Reject community updates whose similarity
    to my own profile is below 0.45." becomes ``min_relevance`` with threshold 0.45; a rule in
    other words ("Ignore updates about horror films") is a text rule that only LLMs apply.
    """
    for kind, name, pattern in _RULE_PATTERNS:
        found = pattern.search(text)
        if found is None:
            continue
        value = float(found.group(1))
        if kind == "max_share":
            value /= 100.0
            if not 0.0 < value <= 1.0:
                continue
        if kind == "conflict":
            value = abs(value)
        return kind, {name: value}
    return "text", {}


def default_rules(settings: FilterSettings) -> tuple[FilterRule, ...]:
    """The filter memory every client starts with, built from ``world.filters``."""
    specs: list[tuple[RuleKind, dict[str, float]]] = [
        ("recency", {"max_age": float(settings.recency_steps)}),
        ("conflict", {"threshold": settings.conflict_threshold}),
        ("min_relevance", {"threshold": settings.min_relevance}),
        ("max_share", {"share": settings.max_propagated_share}),
    ]
    return tuple(
        FilterRule(rule_id=f"rule-{kind}", text=describe(kind, params), kind=kind, params=params)
        for kind, params in specs
    )


@dataclass(frozen=True, slots=True)
class FilterMemory:
    """An ordered, bounded tuple of rules; the first rule that objects to a message decides."""

    rules: tuple[FilterRule, ...]
    max_rules: int = 8
    owner: str = "*"  # "*" = the shared default memory

    def __post_init__(self) -> None:
        if len(self.rules) > self.max_rules:
            raise ValueError(f"a filter memory holds at most {self.max_rules} rules")

    def rule(self, kind: RuleKind) -> FilterRule | None:
        """The first rule of ``kind``, if any."""
        return next((r for r in self.rules if r.kind == kind), None)

    def decide(
        self, message: RouterMessage, now: int, profile: Mapping[str, float]
    ) -> tuple[Decision, str | None]:
        """Apply the executable rules in order to one message.

        Returns the decision and the id of the rule that made it (None when no rule objected).
        Relevance is the message's routing score: cos(router profile, client profile) at send time.
        """
        return self.decide_all((message,), now, profile)[0]

    def decide_all(
        self, messages: Sequence[RouterMessage], now: int, profile: Mapping[str, float]
    ) -> list[tuple[Decision, str | None]]:
        """``decide`` for each of one client's messages, in order. What depends on the client
        only (the attributes each conflict rule finds strongly disliked) is worked out once."""
        disliked = [
            _disliked(profile, rule.params["threshold"]) if rule.kind == "conflict" else ()
            for rule in self.rules
        ]
        decisions: list[tuple[Decision, str | None]] = []
        for message in messages:
            decisions.append(self._first_objection(message, now, profile, disliked))
        return decisions

    def _first_objection(
        self,
        message: RouterMessage,
        now: int,
        profile: Mapping[str, float],
        disliked: list[tuple[str, ...]],
    ) -> tuple[Decision, str | None]:
        for rule, dislikes in zip(self.rules, disliked, strict=True):
            kind = rule.kind
            if kind == "recency" and now - message.step > rule.params["max_age"]:
                return "dropped", rule.rule_id
            if kind == "conflict" and dislikes:
                promoted = message.attributes
                if any(promoted.get(attribute, 0.0) > 0 for attribute in dislikes):
                    return "rejected", rule.rule_id
            if kind == "min_relevance" and profile and message.score < rule.params["threshold"]:
                return "rejected", rule.rule_id
        return "accepted", None

    def max_share(self) -> float:
        """The cap on the propagated share (1.0 when no max_share rule exists)."""
        rule = self.rule("max_share")
        return rule.params["share"] if rule else 1.0

    def replaced(self, rules: tuple[FilterRule, ...], owner: str) -> FilterMemory:
        """A new memory with other rules (copy on write for one client)."""
        return FilterMemory(rules=rules, max_rules=self.max_rules, owner=owner)


def _disliked(profile: Mapping[str, float], threshold: float) -> tuple[str, ...]:
    """Attributes the client dislikes beyond ``threshold`` (weight below ``-threshold``); a
    message that promotes one of them conflicts with the client."""
    if not profile or min(profile.values()) >= -threshold:
        return ()  # no strong dislike at all: the common case, checked at C speed
    return tuple(attribute for attribute, weight in profile.items() if weight < -threshold)

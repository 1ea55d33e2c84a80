"""Filter memory: the ordered rules a client applies to buffered router messages.

Pipeline position: consulted in forward step 5 (reception) when a buffer flushes, rewritten in the
backward phase (optimize). Each rule has natural-language ``text`` (what an LLM reads and rewrites)
and, where recnet can execute it, a ``kind`` with ``params`` (what the offline brain applies).
Rules are immutable; changing a memory creates new rule objects, and clients share the default
memory until one of them is optimised (copy on write).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from recnet.config.scenario import FilterSettings
from recnet.registry import FILTER_RULES
from recnet.world.buffer import RouterMessage
from recnet.world.rule_kinds import Decision, below_routing_score, relevance

#: A registered kind's name (``recnet.registry.FILTER_RULES``) or ``"text"`` (LLM-only rule).
RuleKindName = str
__all__ = ["Decision", "FilterMemory", "FilterRule", "default_rules", "describe", "parse_rule"]


@dataclass(frozen=True, slots=True)
class FilterRule:
    """One rule. ``kind="text"`` rules are read by LLMs only; the offline brain skips them."""

    rule_id: str
    text: str
    kind: RuleKindName = "text"
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


def describe(kind: RuleKindName, params: Mapping[str, float]) -> str:
    """Natural-language text of an executable rule."""
    if kind == "text":
        raise ValueError("rule kind 'text' has no generated text")
    spec = FILTER_RULES.get(kind)
    return spec.text(params[spec.param])


def parse_rule(text: str) -> tuple[RuleKindName, dict[str, float]]:
    """The executable form of a rule text written like ``describe``'s, else ``("text", {})``.

    This is how an LLM-written rule stays executable: "Reject community updates whose similarity
    to my own profile is below 0.45." becomes ``min_relevance`` with threshold 0.45; a rule in
    other words ("Ignore updates about horror films") is a text rule that only LLMs apply. Kinds
    are tried in registry order (built-ins first).
    """
    known = FILTER_RULES.ordered_names(entry_points=False)
    for names in (known, [n for n in FILTER_RULES.ordered_names() if n not in known]):
        for name in names:
            spec = FILTER_RULES.get(name)
            found = spec.pattern.search(text)
            value = None if found is None else spec.from_text(float(found.group(1)))
            if value is not None:
                return spec.name, {spec.param: value}
    return "text", {}


def default_rules(settings: FilterSettings) -> tuple[FilterRule, ...]:
    """The filter memory every client starts with, built from ``world.filters``."""
    specs: list[tuple[RuleKindName, dict[str, float]]] = [
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
    #: What ``min_relevance`` compares: the message content's cosine to the client's own
    #: profile ("content") or the routing score stored with the message ("routing_score").
    relevance: Literal["content", "routing_score"] = "content"

    def __post_init__(self) -> None:
        if len(self.rules) > self.max_rules:
            raise ValueError(f"a filter memory holds at most {self.max_rules} rules")

    def rule(self, kind: RuleKindName) -> FilterRule | None:
        """The first rule of ``kind``, if any."""
        return next((r for r in self.rules if r.kind == kind), None)

    def decide(
        self, message: RouterMessage, now: int, profile: Mapping[str, float]
    ) -> tuple[Decision, str | None]:
        """Apply the executable rules in order to one message.

        Returns the decision and the id of the rule that made it (None when no rule objected).
        ``profile`` is the client's original profile; with ``relevance="routing_score"`` the
        ``min_relevance`` rule reads the message's routing score instead of its content.
        """
        for rule in self.rules:
            if rule.kind == "text":
                continue
            spec = FILTER_RULES.get(rule.kind)
            decide = spec.decide
            if rule.kind == "min_relevance" and self.relevance == "routing_score":
                decide = below_routing_score
            if decide is None:
                continue
            decision = decide(message, now, profile, rule.params[spec.param])
            if decision is not None:
                return decision, rule.rule_id
        return "accepted", None

    def relevance_of(self, message: RouterMessage, profile: Mapping[str, float]) -> float:
        """The value ``min_relevance`` compares with its threshold for this message."""
        return message.score if self.relevance == "routing_score" else relevance(message, profile)

    def decide_all(
        self, messages: Sequence[RouterMessage], now: int, profile: Mapping[str, float]
    ) -> list[tuple[Decision, str | None]]:
        """``decide`` for each of one client's messages, in order."""
        return [self.decide(message, now, profile) for message in messages]

    def max_share(self) -> float:
        """The cap on the propagated share (1.0 when no max_share rule exists)."""
        rule = self.rule("max_share")
        return rule.params["share"] if rule else 1.0

    def replaced(self, rules: tuple[FilterRule, ...], owner: str) -> FilterMemory:
        """A new memory with other rules (copy on write for one client)."""
        return FilterMemory(
            rules=rules, max_rules=self.max_rules, owner=owner, relevance=self.relevance
        )

"""Prompt variables and answer checks of the LLM brain: how agents become prompt text, and how an
answer is matched back to candidates, message indices and attributes.

Pipeline position: helpers of ``recnet.brain.llm`` (and its fused and backward parts); pure
functions, no calls. Texts put into prompts are flattened to one line and cut to a length.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from recnet.llm.schemas import MergeOutput, PredictOutput, RankOutput
from recnet.llm.structured import run_concurrently
from recnet.world.agents import ClientAgent
from recnet.world.buffer import RouterMessage
from recnet.world.profile import Weights, category, render
from recnet.world.profile import value as attribute_value

MAX_PROMPT_PROFILE_CHARS = 1200  # one candidate's description in predict/rank prompts
TREND_ATTRIBUTES = 8  # a ranking user's router trend: its strongest attributes, named in the prompt
Record = dict[str, Any]


class _Calls:
    """The records of one task's calls, kept per call in program order (for a stable trace)."""

    __slots__ = ("slots",)

    def __init__(self) -> None:
        self.slots: list[list[Record]] = []

    def slot(self) -> list[Record]:
        records: list[Record] = []
        self.slots.append(records)
        return records


async def _together(coros: Sequence[Awaitable[Any]]) -> list[Any]:
    """Await all of ``coros`` (each bounded by the brain's call slots); the first error cancels
    the rest."""
    if not coros:
        return []
    return await run_concurrently(coros, len(coros))


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` in consecutive chunks of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


def batch_agent_id(ids: Sequence[str]) -> str:
    """The ``llm_calls.agent_id`` of a batched call: its first agent and how many others."""
    return ids[0] if len(ids) == 1 else f"{ids[0]}+{len(ids) - 1}"


def _part(parts: Mapping[str, Any], agent_id: str) -> Any:
    """The part of a keyed answer that belongs to ``agent_id`` (exact, or its bare key)."""
    if agent_id in parts:
        return parts[agent_id]
    bare = agent_id.partition(":")[2]
    for key, value in parts.items():
        if key.strip().strip("[]#").strip().lower() in (agent_id.lower(), bare.lower()):
            return value
    return None


# prompt variables ------------------------------------------------------------------------------
def _one_line(text: str, limit: int = MAX_PROMPT_PROFILE_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe(agent: ClientAgent) -> str:
    """An item for reflect prompts: label and profile."""
    text = _one_line(agent.profile_text())
    return text if text.startswith(agent.label) else f"{agent.label} — {text}"


def candidate_lines(
    candidates: Sequence[ClientAgent], limit: int = MAX_PROMPT_PROFILE_CHARS
) -> str:
    """``<id>: <profile>`` per candidate (the format the predict/rank templates describe), each
    profile cut to ``limit`` characters."""
    return "\n".join(f"{c.agent_id}: {_one_line(c.profile_text(), limit)}" for c in candidates)


def routed_lines(routed: Mapping[str, float]) -> list[str]:
    """Routed attribute changes, strongest first: ``"genre: comedy (+0.80)"``."""
    ranked = sorted(routed.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    lines = []
    for attribute, change in ranked:
        head, sep, rest = attribute.partition(":")
        name = f"{head}: {rest}" if sep else attribute
        lines.append(f"{name} ({change:+.2f})")
    return lines


def rule_lines(rules: Sequence[Any]) -> str:
    if not rules:
        return "(no rules: take in every message)"
    return "\n".join(f"{n}. [{rule.rule_id}] {rule.text}" for n, rule in enumerate(rules, 1))


def message_lines(
    messages: Sequence[RouterMessage], now: int, limit: int = MAX_PROMPT_PROFILE_CHARS
) -> str:
    lines = []
    for index, message in enumerate(messages):
        age = now - message.step
        when = "this step" if age <= 0 else f"{age} step{'s' if age != 1 else ''} ago"
        text = _one_line(message.text or render(message.attributes, limit=16), limit)
        lines.append(
            f"[{index}] router {message.router_id} (similarity {message.score:.2f}, sent {when}): "
            f"{text}"
        )
    return "\n".join(lines)


# answers ---------------------------------------------------------------------------------------
def match_id(answer: str, ids: Sequence[str]) -> str | None:
    """The candidate id an answer names: exact, then case/space-insensitive, then the bare key
    (``"42"`` for ``"i:42"``). None when it names no candidate."""
    text = answer.strip().strip("\"'`[]").strip()
    if text in ids:
        return text
    lowered = {i.lower(): i for i in ids}
    if text.lower() in lowered:
        return lowered[text.lower()]
    keys = {i.partition(":")[2].lower(): i for i in ids if ":" in i}
    return keys.get(text.lower())


def _one_of(ids: Sequence[str]) -> Callable[[PredictOutput], None]:
    def check(value: PredictOutput) -> None:
        if match_id(value.chosen, ids) is None:
            raise ValueError(
                f"'chosen' is {value.chosen!r}, which is not a candidate; "
                f"choose exactly one of: {', '.join(ids)}"
            )

    return check


def exactly_once(
    answers: Sequence[str], ids: Sequence[str], match: Callable[[str], str | None]
) -> list[str]:
    """What keeps ``answers`` from naming every one of ``ids`` exactly once (``match`` maps an
    answer to the id it names, or None): "unknown: …", "twice: …", "missing: …" (empty = fine)."""
    unknown: list[str] = []
    repeated: list[str] = []
    seen: set[str] = set()
    for answer in answers:
        matched = match(answer)
        if matched is None:
            unknown.append(answer)
        elif matched in seen:
            repeated.append(matched)
        else:
            seen.add(matched)
    missing = [i for i in ids if i not in seen]
    problems = []
    for label, names in (("unknown", unknown), ("twice", repeated), ("missing", missing)):
        if names:
            problems.append(f"{label}: {', '.join(names)}")
    return problems


def _permutation_of(ids: Sequence[str]) -> Callable[[RankOutput], None]:
    def check(value: RankOutput) -> None:
        problems = exactly_once(value.ranking, ids, lambda answer: match_id(answer, ids))
        if problems:
            raise ValueError(
                "'ranking' must list every candidate id exactly once "
                f"({'; '.join(problems)}); the candidates are: {', '.join(ids)}"
            )

    return check


def _merge_indices(n: int) -> Callable[[MergeOutput], None]:
    def check(value: MergeOutput) -> None:
        bad = sorted({i for i in [*value.accepted, *value.rejected] if not 0 <= i < n})
        both = sorted(set(value.accepted) & set(value.rejected))
        if bad:
            raise ValueError(
                f"message indices {bad} do not exist; the messages are numbered 0 to {n - 1}"
            )
        if both:
            raise ValueError(f"messages {both} are both accepted and rejected; decide once each")

    return check


def attributes_to_weights(attributes: Mapping[str, Sequence[str]], size: int) -> Weights:
    """``{"genre": ["noir", "not gory"]}`` → ``{"genre:noir": 1.0, "genre:gory": -1.0}``.

    Lower case, whitespace collapsed, ':' inside a category replaced; the first ``size``
    attributes in answer order are kept.
    """
    weights: Weights = {}
    for raw_category, values in attributes.items():
        category = " ".join(raw_category.lower().replace(":", " ").split()) or "misc"
        for raw in values:
            value = " ".join(str(raw).lower().split())
            sign = 1.0
            if value.startswith("not "):
                value, sign = value[4:].strip(), -1.0
            if not value:
                continue
            weights.setdefault(f"{category}:{value}", sign)
            if len(weights) >= size:
                return weights
    return weights


def with_trend_text(propagated: str, trend: Mapping[str, float]) -> str:
    """The propagated-profile text a ranking user is shown with its router trend
    (``recnet.world.trend``, unit positive weights): the ``TREND_ATTRIBUTES`` strongest
    attributes its communities have lately been moving toward, named without weights."""
    if not trend:
        return propagated
    ranked = sorted(trend.items(), key=lambda kv: (-kv[1], kv[0]))[:TREND_ATTRIBUTES]
    named = ", ".join(f"{category(a)} {attribute_value(a)}" for a, _ in ranked)
    news = f"Your communities have lately been moving toward: {named}."
    return f"{propagated}\n{news}" if propagated else news


def with_recent_text(profile: str, recent: Sequence[str]) -> str:
    """The profile text a ranking user is shown with its short-term memory
    (``interaction.short_term_items``): the labels of the items it chose last, oldest first,
    named newest first."""
    if not recent:
        return profile
    memory = f"You recently chose: {'; '.join(reversed(recent))}."
    return f"{profile}\n{memory}" if profile else memory

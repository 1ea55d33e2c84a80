"""The LLM brain: every agent operation as a structured call to an LLM through a prompt pack.

Pipeline position: behind the phases, like the offline brain (``recnet.brain.base``): typed tasks
in, outcomes out, agents never mutated. Each operation renders a template of the prompt pack
(``agents/<pack>/``) and runs it with ``recnet.llm.call_structured`` on the backend stack
(provider ← retry ← rate limit ← budget ← cache) built by ``recnet.llm.build_backend``.

Textual profiles are the truth; attribute weights are kept beside them because routing
(embedding, perception, multicast) works on weights. The policy, chosen to keep calls few:

* *init* — items start from their metadata with **no call**: weights from
  ``item_attributes`` (it is structured already) and ``item_description`` as text. Users start
  neutral (or from history weights) and get a text at their first reflection. A 9,742-item
  catalogue therefore costs nothing until an item acts.
* *interact* — ``predict`` (user profile + the two candidates → chosen; validator: the answer
  must name a candidate), then ``reflect_user`` and ``reflect_item`` (the true item, and the
  wrong one when the user chose wrongly) concurrently, then ``extract`` for every profile whose
  text changed, so perception sees the attribute changes. Extracted attributes become weights
  ``"category:value" → 1.0`` (``"not x"`` → ``category:x`` at -1.0), lower case, capped at
  ``world.profile_size``.
* *summarize* — the router's text comes from ``summarize``; its weights are combined
  numerically (the offline brain's EMA of routed changes, ``propagation.router_ema``) because
  routed attributes are weights already: no extract call.
* *merge* — ``merge`` reads the buffered messages, the filter rules (ids in brackets) and the
  original profile; its accepted/rejected indices become decisions with the rule id the model
  names (``rule_ids``), else ``"llm"``. The propagated text comes from the answer, the
  propagated weights from the accepted messages' weights (damped, score-weighted mean, capped
  by the max-share rule): no extract call.
* *rank* — ``rank`` (validator: a permutation of the candidate ids); score = n − position.

Failures: a call whose answer stays invalid after ``llm.max_repairs`` re-asks returns ``ok=False``
and the brain keeps the previous state — no profile update, router profile unchanged, merged
messages ``dropped`` by ``llm-fallback`` — and a predict/rank that failed falls back to the
offline score (cosine of effective profiles + popularity prior), marked ``ok=False`` in ranks.
Backend errors (budget, replay miss, a server that stays down) propagate.

Concurrency: the tasks of one batch run together (``run_concurrently``) and at most
``llm.max_concurrency`` calls are in flight at once. Every attempt's record (``llm_calls``
row, with step, phase and agent) goes to ``on_record`` after the batch, in task order, so a
replayed run writes the same rows in the same order. Candidates are shown in an order hashed
from the seed, step and ids (never "true item first"); requests carry ``seed`` =
``scenario.seed``, so same scenario + seed + replayed cache ⇒ identical outcomes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recnet.brain.base import (
    BrainKind,
    InteractionOutcome,
    InteractionTask,
    MergeOutcome,
    MergeTask,
    OperationCounts,
    ProfileUpdate,
    RankOutcome,
    RankTask,
    SummarizeTask,
)
from recnet.brain.offline import OfflineBrain, score_weighted_mean
from recnet.config.scenario import Scenario
from recnet.data.types import Item
from recnet.llm.factory import build_backend
from recnet.llm.pack import PromptPack, load_pack
from recnet.llm.protocol import LLMBackend
from recnet.llm.schemas import (
    ExtractOutput,
    MergeOutput,
    PredictOutput,
    RankOutput,
    ReflectOutput,
    SummarizeOutput,
)
from recnet.llm.stats import LLMStats
from recnet.llm.structured import CallMeta, StructuredResult, call_structured, run_concurrently
from recnet.world.agents import ClientAgent
from recnet.world.buffer import RouterMessage
from recnet.world.content import item_attributes, item_description
from recnet.world.profile import Weights, add_scaled, norm, normalized, render, top
from recnet.world.rules import Decision

Record = dict[str, Any]
OnRecord = Callable[[Record], None]

EXTRACT_CATEGORIES = ["genre", "era", "mood", "theme", "tag", "title"]
WORDS_PER_ATTRIBUTE = 2  # a text profile may use this many words per attribute of the budget
MAX_PROMPT_PROFILE_CHARS = 1200  # one candidate's description in predict/rank prompts
FALLBACK_RULE = "llm-fallback"
LLM_RULE = "llm"


class _Calls:
    """The records of one task's calls, kept per call in program order (for a stable trace)."""

    __slots__ = ("slots",)

    def __init__(self) -> None:
        self.slots: list[list[Record]] = []

    def slot(self) -> list[Record]:
        records: list[Record] = []
        self.slots.append(records)
        return records


@dataclass(frozen=True, slots=True)
class Ask:
    """One structured call another component (a critic) makes through the brain: a pack
    operation, its template variables, who and when it is for, and an optional answer check."""

    operation: str
    variables: Mapping[str, Any]
    agent_id: str
    step: int
    phase: str
    validator: Callable[[Any], None] | None = None


class LLMBrain:
    """The Brain protocol on an LLM backend; see the module docstring for the policy."""

    kind: BrainKind = "llm"
    critic = "llm"  # the backward phase's default critic (recnet.registry.CRITICS)
    checkpoint_every = 1  # an LLM step costs money: never repeat one on resume

    def __init__(
        self,
        scenario: Scenario,
        backend: LLMBackend,
        *,
        pack: PromptPack | None = None,
        stats: LLMStats | None = None,
        on_record: OnRecord | None = None,
        run_id: str | None = None,
    ) -> None:
        self.scenario = scenario
        self.settings = scenario.llm
        self.label = f"llm:{scenario.llm.backend}"
        self.backend = backend
        self.pack = pack if pack is not None else load_pack(self.settings.pack)
        self.stats = stats if stats is not None else LLMStats()
        self.on_record = on_record
        self.run_id = run_id
        self.operations = OperationCounts()
        self.interaction = scenario.interaction
        self._reference = OfflineBrain(scenario)  # the fallback score when an answer is unusable
        self.propagation = scenario.propagation
        self.filtering = scenario.world.filters.enabled
        self.profile_size = scenario.world.profile_size
        self.router_profile_size = scenario.world.router_profile_size
        self.client_words = WORDS_PER_ATTRIBUTE * self.profile_size
        self.router_words = WORDS_PER_ATTRIBUTE * self.router_profile_size
        self.step = 0  # the latest step seen in a task (rank tasks carry none)
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario,
        *,
        on_record: OnRecord | None = None,
        cache_path: Path | None = None,
        run_id: str | None = None,
    ) -> LLMBrain:
        """Build the backend stack named by ``scenario.llm`` and a brain on top of it."""
        stats = LLMStats()
        pack = load_pack(scenario.llm.pack)  # validate the pack before any connection is made
        backend = build_backend(scenario.llm, cache_path=cache_path, stats=stats)
        return cls(scenario, backend, pack=pack, stats=stats, on_record=on_record, run_id=run_id)

    # plumbing ----------------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(self.settings.max_concurrency)
            self._slots_loop = loop
        return self._slots

    async def _call(
        self,
        sink: list[Record],
        operation: str,
        variables: Mapping[str, Any],
        *,
        agent_id: str,
        step: int,
        phase: str,
        validator: Callable[[Any], None] | None = None,
    ) -> StructuredResult[Any]:
        meta = CallMeta.from_settings(
            self.settings,
            seed=self.scenario.seed,
            agent_id=agent_id,
            step=step,
            phase=phase,
            run_id=self.run_id,
        )
        async with self._semaphore():
            return await call_structured(
                self.backend,
                self.pack,
                operation,
                variables,
                meta=meta,
                max_repairs=self.settings.max_repairs,
                on_record=sink.append,
                validator=validator,
                stats=self.stats,
            )

    async def ask(self, asks: Sequence[Ask]) -> list[StructuredResult[Any]]:
        """Run one call per ``Ask`` concurrently (bounded by ``llm.max_concurrency``) through
        this brain's backend, pack, stats and trace hook; records come in ask order."""
        calls = [_Calls() for _ in asks]
        coros = [
            self._call(
                c.slot(),
                a.operation,
                a.variables,
                agent_id=a.agent_id,
                step=a.step,
                phase=a.phase,
                validator=a.validator,
            )
            for a, c in zip(asks, calls, strict=True)
        ]
        return await self._batch(coros, calls)

    async def _batch(self, coros: Sequence[Awaitable[Any]], calls: Sequence[_Calls]) -> list[Any]:
        """Run one batch's task coroutines; emit their records in task and call order."""
        try:
            return await run_concurrently(coros, self.settings.max_concurrency)
        finally:
            self._emit(calls)

    def _emit(self, calls: Sequence[_Calls]) -> None:
        for task_calls in calls:
            for records in task_calls.slots:
                for record in records:
                    tokens = (record["tokens_in"] or 0) + (record["tokens_out"] or 0)
                    self.operations.add(record["operation"], 1, tokens)
                    if self.on_record is not None:
                        self.on_record(record)

    def _see(self, step: int) -> None:
        self.step = max(self.step, step)

    def score(self, user: ClientAgent, item: ClientAgent, popularity: float) -> float:
        """The offline brain's score (cosine of effective profiles + prior): the fallback."""
        return self._reference.score(user, item, popularity)

    def _order(self, step: int, owner: str, candidates: Sequence[ClientAgent]) -> list[int]:
        """Positions of ``candidates`` in a seeded hash order (the order shown to the model)."""
        seed = self.scenario.seed

        def key(position: int) -> str:
            text = f"{seed}:{step}:{owner}:{candidates[position].agent_id}"
            return hashlib.sha256(text.encode("utf-8")).hexdigest()

        return sorted(range(len(candidates)), key=key)

    # init --------------------------------------------------------------------------------------
    async def extract_items(self, items: Sequence[Item]) -> dict[str, ProfileUpdate]:
        """Metadata weights and description text; no LLM call (see the module docstring)."""
        return {
            item.item_id: ProfileUpdate(item_attributes(item), text=item_description(item))
            for item in items
        }

    # interact ----------------------------------------------------------------------------------
    async def interact(self, tasks: Sequence[InteractionTask]) -> list[InteractionOutcome]:
        calls = [_Calls() for _ in tasks]
        for task in tasks:
            self._see(task.step)
        return await self._batch(
            [self._interact_one(t, c) for t, c in zip(tasks, calls, strict=True)], calls
        )

    async def _interact_one(self, task: InteractionTask, calls: _Calls) -> InteractionOutcome:
        user, positive, negative = task.user, task.positive, task.negative
        shown = [positive, negative]
        shown = [shown[p] for p in self._order(task.step, user.agent_id, shown)]
        ids = [c.agent_id for c in shown]
        predicted = await self._call(
            calls.slot(),
            "predict",
            {
                "user_profile": user.profile_text(),
                "propagated_profile": user.propagated_profile_text(),
                "candidates": candidate_lines(shown),
            },
            agent_id=user.agent_id,
            step=task.step,
            phase="interact",
            validator=_one_of(ids),
        )
        reasoning: str | None = None
        if predicted.ok:
            value: PredictOutput = predicted.value
            chosen = match_id(value.chosen, ids) or ids[0]
            reasoning = value.reasoning or None
        else:
            s_pos = self.score(user, positive, task.popularity[positive.agent_id])
            s_neg = self.score(user, negative, task.popularity[negative.agent_id])
            chosen = positive.agent_id if s_pos > s_neg else negative.agent_id
        correct = chosen == positive.agent_id
        outcome = "correct" if correct else "wrong"
        reflections: list[tuple[ClientAgent, Awaitable[StructuredResult[Any]]]] = [
            (
                user,
                self._call(
                    calls.slot(),
                    "reflect_user",
                    {
                        "profile": user.profile_text(),
                        "consumed_item": describe(positive),
                        "other_item": describe(negative),
                        "outcome": outcome,
                        "max_words": self.client_words,
                    },
                    agent_id=user.agent_id,
                    step=task.step,
                    phase="interact",
                ),
            )
        ]
        roles = [(positive, "consumed")] + ([] if correct else [(negative, "passed_over")])
        for item, role in roles:
            reflections.append(
                (
                    item,
                    self._call(
                        calls.slot(),
                        "reflect_item",
                        {
                            "profile": item.profile_text(),
                            "user_profile": user.profile_text(),
                            "role": role,
                            "outcome": outcome,
                            "max_words": self.client_words,
                        },
                        agent_id=item.agent_id,
                        step=task.step,
                        phase="interact",
                    ),
                )
            )
        results = await _together([call for _, call in reflections])
        changed: list[tuple[ClientAgent, str]] = []
        for (agent, _), result in zip(reflections, results, strict=True):
            if not result.ok:
                continue  # fallback: the agent keeps its profile
            reflected: ReflectOutput = result.value
            text = reflected.updated_profile.strip()
            if text and text != agent.profile_text().strip():
                changed.append((agent, text))
        weights = await _together(
            [self._extract(calls.slot(), agent, text, task.step) for agent, text in changed]
        )
        updates = {
            agent.agent_id: ProfileUpdate(new_weights, text=text)
            for (agent, text), new_weights in zip(changed, weights, strict=True)
        }
        return InteractionOutcome(chosen, correct, updates, reasoning)

    async def _extract(
        self, sink: list[Record], agent: ClientAgent, text: str, step: int
    ) -> Weights:
        """Weights of a new profile text; the previous weights when extraction fails."""
        result = await self._call(
            sink,
            "extract",
            {"kind": agent.kind, "profile": text, "categories": EXTRACT_CATEGORIES},
            agent_id=agent.agent_id,
            step=step,
            phase="interact",
        )
        if not result.ok:
            return dict(agent.original)
        value: ExtractOutput = result.value
        extracted = attributes_to_weights(value.attributes, self.profile_size)
        return extracted if extracted else dict(agent.original)

    # summarize ---------------------------------------------------------------------------------
    async def summarize(self, tasks: Sequence[SummarizeTask]) -> list[ProfileUpdate]:
        calls = [_Calls() for _ in tasks]
        for task in tasks:
            self._see(task.step)
        return await self._batch(
            [self._summarize_one(t, c) for t, c in zip(tasks, calls, strict=True)], calls
        )

    async def _summarize_one(self, task: SummarizeTask, calls: _Calls) -> ProfileUpdate:
        router = task.router
        result = await self._call(
            calls.slot(),
            "summarize",
            {
                "router_profile": router.profile_text(),
                "attributes": routed_lines(task.routed),
                "max_words": self.router_words,
            },
            agent_id=router.router_id,
            step=task.step,
            phase="integrate",
        )
        if not result.ok:
            return ProfileUpdate(dict(router.profile), text=router.text)
        value: SummarizeOutput = result.value
        ema = self.propagation.router_ema
        blended = add_scaled(
            {a: (1.0 - ema) * w for a, w in router.profile.items()}, normalized(task.routed), ema
        )
        kept = {a: w for a, w in blended.items() if w > 0}
        weights = normalized(top(kept, self.router_profile_size))
        return ProfileUpdate(weights, text=value.profile.strip() or router.text)

    # merge -------------------------------------------------------------------------------------
    async def merge(self, tasks: Sequence[MergeTask]) -> list[MergeOutcome]:
        calls = [_Calls() for _ in tasks]
        for task in tasks:
            self._see(task.step)
        return await self._batch(
            [self._merge_one(t, c) for t, c in zip(tasks, calls, strict=True)], calls
        )

    async def _merge_one(self, task: MergeTask, calls: _Calls) -> MergeOutcome:
        client, messages = task.client, task.messages
        rules = client.filters.rules if self.filtering else ()
        rule_ids = {rule.rule_id for rule in rules}
        result = await self._call(
            calls.slot(),
            "merge",
            {
                "kind": client.kind,
                "original_profile": client.profile_text(),
                "propagated_profile": client.propagated_profile_text(),
                "filter_rules": rule_lines(rules),
                "messages": message_lines(messages, task.step),
                "max_words": self.client_words,
            },
            agent_id=client.agent_id,
            step=task.step,
            phase="receive",
            validator=_merge_indices(len(messages)),
        )
        if not result.ok:
            dropped: tuple[Decision, str | None] = ("dropped", FALLBACK_RULE)
            return MergeOutcome([dropped] * len(messages), None)
        value: MergeOutput = result.value
        accepted_positions = set(value.accepted) if self.filtering else set(range(len(messages)))
        decisions: list[tuple[Decision, str | None]] = []
        for position in range(len(messages)):
            named = value.rule_ids.get(str(position), "").strip()
            rule = named if named in rule_ids else LLM_RULE
            decisions.append(("accepted" if position in accepted_positions else "rejected", rule))
        accepted = [m for p, m in enumerate(messages) if p in accepted_positions]
        if not accepted:
            return MergeOutcome(decisions, None)
        weights = self._propagated_weights(client, accepted)
        text = value.propagated_profile.strip() or client.propagated_text
        return MergeOutcome(decisions, ProfileUpdate(weights, text=text))

    def _propagated_weights(
        self, client: ClientAgent, accepted: Sequence[RouterMessage]
    ) -> Weights:
        """The offline brain's damped, score-weighted merge of the accepted messages' weights."""
        incoming = score_weighted_mean(accepted)
        scale = norm(client.original) or 1.0
        damping = self.propagation.merge_damping
        propagated = {a: (1.0 - damping) * w for a, w in client.propagated.items()}
        for a, w in incoming.items():
            propagated[a] = propagated.get(a, 0.0) + damping * scale * w
        share = client.filters.max_share() if self.filtering else 1.0
        if share < 1.0:
            cap = share / (1.0 - share) * scale
            current = norm(propagated)
            if current > cap:
                propagated = {a: w * cap / current for a, w in propagated.items()}
        return top(propagated, self.profile_size)

    # rank --------------------------------------------------------------------------------------
    async def rank(self, tasks: Sequence[RankTask]) -> list[RankOutcome]:
        calls = [_Calls() for _ in tasks]
        return await self._batch(
            [self._rank_one(t, c) for t, c in zip(tasks, calls, strict=True)], calls
        )

    async def _rank_one(self, task: RankTask, calls: _Calls) -> RankOutcome:
        user, candidates = task.user, task.candidates
        shown = [candidates[p] for p in self._order(self.step, user.agent_id, candidates)]
        ids = [c.agent_id for c in candidates]
        result = await self._call(
            calls.slot(),
            "rank",
            {
                "user_profile": user.profile_text(),
                "propagated_profile": user.propagated_profile_text(),
                "candidates": candidate_lines(shown),
                "n_candidates": len(candidates),
            },
            agent_id=user.agent_id,
            step=self.step,
            phase="evaluate",
            validator=_permutation_of(ids),
        )
        if not result.ok:
            scores = [
                self.score(user, c, p) for c, p in zip(candidates, task.popularity, strict=True)
            ]
            return RankOutcome(scores, None, ok=False)
        value: RankOutput = result.value
        ranking = [match_id(answer, ids) for answer in value.ranking]
        position = {agent_id: p for p, agent_id in enumerate(ranking)}
        n = len(ids)
        return RankOutcome([float(n - position[i]) for i in ids], value.reasoning or None)

    # checkpoints -------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """What a resumed run needs besides the world: the LLM counters (budgets read them)."""
        return {"stats": self.stats.as_dict(), "step": self.step}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Undo ``checkpoint_state``; the stats object is updated in place (wrappers share it)."""
        for name, value in dict(state.get("stats") or {}).items():
            if hasattr(self.stats, name):
                setattr(self.stats, name, value)
        self.step = int(state.get("step", self.step))

    async def aclose(self) -> None:
        await self.backend.aclose()


async def _together(coros: Sequence[Awaitable[Any]]) -> list[Any]:
    """Await all of ``coros`` (each bounded by the brain's call slots); the first error cancels
    the rest."""
    if not coros:
        return []
    return await run_concurrently(coros, len(coros))


# prompt variables ------------------------------------------------------------------------------
def _one_line(text: str, limit: int = MAX_PROMPT_PROFILE_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe(agent: ClientAgent) -> str:
    """An item for reflect prompts: label and profile."""
    text = _one_line(agent.profile_text())
    return text if text.startswith(agent.label) else f"{agent.label} — {text}"


def candidate_lines(candidates: Sequence[ClientAgent]) -> str:
    """``<id>: <profile>`` per candidate (the format the predict/rank templates describe)."""
    return "\n".join(f"{c.agent_id}: {_one_line(c.profile_text())}" for c in candidates)


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


def message_lines(messages: Sequence[RouterMessage], now: int) -> str:
    lines = []
    for index, message in enumerate(messages):
        age = now - message.step
        when = "this step" if age <= 0 else f"{age} step{'s' if age != 1 else ''} ago"
        text = _one_line(message.text or render(message.attributes, limit=16))
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

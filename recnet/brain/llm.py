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
* *interact* — the choice: ``choose_merge`` when the user has buffered messages (fused, see
  ``recnet.brain.llm_fused``) else ``predict`` (validator: the answer names a candidate). Then,
  after a wrong choice (or every choice with ``llm.reflect_on: always``), ``reflect_fused`` (user
  and items with their attributes in one call) or, unfused, ``reflect_user`` / ``reflect_item``
  and an ``extract`` of every changed text; a right choice with ``reflect_on: wrong`` reinforces
  the weights numerically. Attributes become weights ``"category:value" → 1.0`` (``"not x"`` →
  -1.0), lower case, capped at ``world.profile_size``.
* *summarize* — the router's text comes from ``summarize`` (``summarize_batch`` for up to
  ``llm.batch_size`` routers); its weights are combined numerically (the offline brain's EMA of
  routed changes, ``propagation.router_ema``): routed attributes are weights already, no extract.
* *merge* — see ``recnet.brain.llm_merge`` (single, batched, coalesced; no extract call).
* *rank* — ``rank`` (validator: a permutation of the candidate ids); score = n − position. With
  ``propagation.trend_share`` > 0 the user's router trend is named beside its propagated profile,
  with ``interaction.short_term_items`` > 0 the items it chose last beside its own.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from recnet.brain.base import (
    BrainKind,
    InteractionOutcome,
    InteractionTask,
    MergeOutcome,
    OperationCounts,
    ProfileUpdate,
    RankOutcome,
    RankTask,
    SummarizeTask,
)
from recnet.brain.llm_fused import EXTRACT_CATEGORIES, EconomicalOperations
from recnet.brain.llm_merge import FALLBACK_RULE, LLM_RULE, MergeOperations
from recnet.brain.llm_text import (  # re-exported: the LLM brain's prompt and answer helpers
    MAX_PROMPT_PROFILE_CHARS,
    Record,
    _Calls,
    _one_line,
    _one_of,
    _permutation_of,
    attributes_to_weights,
    candidate_lines,
    describe,
    exactly_once,
    match_id,
    message_lines,
    routed_lines,
    rule_lines,
    with_recent_text,
    with_trend_text,
)
from recnet.brain.offline import OfflineBrain, reinforce
from recnet.config.scenario import Scenario
from recnet.data.types import Item
from recnet.llm.factory import build_backend
from recnet.llm.pack import PromptPack, load_pack
from recnet.llm.protocol import LLMBackend
from recnet.llm.schemas import (
    ExtractOutput,
    RankOutput,
    SummarizeOutput,
)
from recnet.llm.stats import LLMStats
from recnet.llm.structured import CallMeta, StructuredResult, call_structured, run_concurrently
from recnet.world.agents import ClientAgent
from recnet.world.buffer import RouterMessage
from recnet.world.content import item_attributes, item_description
from recnet.world.formulas import router_average
from recnet.world.profile import Weights, render
from recnet.world.rules import default_rules

OnRecord = Callable[[Record], None]

WORDS_PER_ATTRIBUTE = 2  # a text profile may use this many words per attribute of the budget


@dataclass(frozen=True, slots=True)
class LLMBrainState:
    """What a checkpoint carries of an LLM brain (``recnet.checkpoint.Checkpointed``)."""

    stats: dict[str, Any]  # LLMStats counters
    step: int


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


class LLMBrain(EconomicalOperations, MergeOperations):
    """The Brain protocol on an LLM backend; see the module docstring for the policy."""

    kind: BrainKind = "llm"
    critic = "llm"  # the backward phase's default critic (recnet.registry.CRITICS)
    checkpoint_every = 1  # an LLM step costs money: never repeat one on resume
    ranks_by_formula = False  # the model ranks: prequential evaluation calls ``rank``

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
        self.propagation, self.filtering = scenario.propagation, scenario.world.filters.enabled
        self.profile_size = scenario.world.profile_size
        self.router_profile_size = scenario.world.router_profile_size
        self.client_words = WORDS_PER_ATTRIBUTE * self.profile_size
        self.router_words = WORDS_PER_ATTRIBUTE * self.router_profile_size
        self.step = 0  # the latest step seen in a task (rank tasks carry none)
        self.fuse = set(self.settings.fuse)
        self.fuses_choose_merge = "choose_merge" in self.fuse
        self.reflect_on, self.batch_size = self.settings.reflect_on, self.settings.batch_size
        self.max_profile_chars = self.settings.max_profile_chars
        self.max_message_chars = self.settings.max_message_chars
        self.coalesce = self.settings.coalesce_messages
        #: the filter memory every client starts with (written once in a batched merge)
        self.shared_rules = tuple(default_rules(scenario.world.filters))
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
        parts: int = 1,
    ) -> StructuredResult[Any]:
        meta = CallMeta.from_settings(
            self.settings,
            seed=self.scenario.seed,
            agent_id=agent_id,
            step=step,
            phase=phase,
            run_id=self.run_id,
        )
        if parts > 1:  # a batched or fused answer holds several agents' parts
            meta = replace(meta, max_tokens=meta.max_tokens * parts)
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
                    prompt, output = record["tokens_in"] or 0, record["tokens_out"] or 0
                    self.operations.add(
                        record["operation"],
                        1,
                        prompt + output,
                        prompt_tokens=prompt,
                        output_tokens=output,
                    )
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
        merged: MergeOutcome | None = None
        if task.messages:  # fused: the user merges its buffer while it chooses
            predicted, merged = await self._choose_merge(calls, task, shown, ids)
        else:
            predicted = await self._call(
                calls.slot(),
                "predict",
                {
                    "user_profile": self._bounded(user.profile_text()),
                    "propagated_profile": self._bounded(user.propagated_profile_text()),
                    "candidates": self._candidate_lines(shown),
                },
                agent_id=user.agent_id,
                step=task.step,
                phase="interact",
                validator=_one_of(ids),
            )
        reasoning: str | None = None
        if predicted.ok:
            chosen = match_id(predicted.value.chosen, ids) or ids[0]
            reasoning = predicted.value.reasoning or None
        else:
            s_pos = self.score(user, positive, task.popularity[positive.agent_id])
            s_neg = self.score(user, negative, task.popularity[negative.agent_id])
            chosen = positive.agent_id if s_pos > s_neg else negative.agent_id
        correct = chosen == positive.agent_id
        outcome = "correct" if correct else "wrong"
        if correct and self.reflect_on == "wrong":  # reinforce the weights, keep the texts
            if not predicted.ok:  # a fallback choice is not the model's: keep the state
                return InteractionOutcome(chosen, correct, {}, reasoning, merge=merged)
            updates = {
                agent_id: ProfileUpdate(update.weights, text=None)
                for agent_id, update in reinforce(
                    user, positive, self.interaction, self.profile_size
                ).items()
            }
            return InteractionOutcome(chosen, correct, updates, reasoning, merge=merged)
        agents = [(user, "user"), (positive, "consumed")]
        if not correct:
            agents.append((negative, "passed_over"))
        if "reflect" in self.fuse:
            updates = await self._reflect_fused(calls, task, agents, outcome)
        else:
            updates = await self._reflect_each(calls, task, agents, outcome)
        return InteractionOutcome(chosen, correct, updates, reasoning, merge=merged)

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
        for task in tasks:
            self._see(task.step)
        return await self._grouped(tasks, self._summarize_one, self._summarize_group)

    async def _summarize_one(self, task: SummarizeTask, calls: _Calls) -> ProfileUpdate:
        router = task.router
        result = await self._call(
            calls.slot(),
            "summarize",
            {
                "router_profile": self._bounded(router.profile_text()),
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
        return self._router_update(task, value.profile.strip())

    def _router_update(self, task: SummarizeTask, text: str) -> ProfileUpdate:
        """The router's new text and its weights: the EMA of routed changes (no extract)."""
        router = task.router
        ema = self.propagation.router_ema
        weights = router_average(router.profile, task.routed, ema, self.router_profile_size)
        return ProfileUpdate(weights, text=text or router.text)

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
        trend = task.trend if self.propagation.trend_share > 0 else {}  # news from its routers
        recent = [item.label for item in task.recent]  # its short-term memory
        result = await self._call(
            calls.slot(),
            "rank",
            {
                "user_profile": with_recent_text(self._bounded(user.profile_text()), recent),
                "propagated_profile": with_trend_text(
                    self._bounded(user.propagated_profile_text()), trend
                ),
                "candidates": self._candidate_lines(shown),
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

    # bounded prompt text -----------------------------------------------------------------------
    def _new_calls(self) -> _Calls:
        return _Calls()

    def _bounded(self, text: str | None) -> str:
        return _one_line(text or "", self.max_profile_chars) if text else ""

    def _describe(self, agent: ClientAgent) -> str:
        text = _one_line(agent.profile_text(), self.max_profile_chars)
        return text if text.startswith(agent.label) else f"{agent.label} — {text}"

    def _candidate_lines(self, candidates: Sequence[ClientAgent]) -> str:
        return candidate_lines(candidates, self.max_profile_chars)

    def _message_lines(self, messages: Sequence[RouterMessage], now: int) -> str:
        return message_lines(messages, now, self.max_message_chars)

    def _message_text(self, message: RouterMessage) -> str:
        text = message.text or render(message.attributes, limit=16)
        return _one_line(text, self.max_message_chars)

    _rule_lines = staticmethod(rule_lines)

    # checkpoints -------------------------------------------------------------------------------
    def state(self) -> LLMBrainState:
        """What a resumed run needs besides the world: the LLM counters (budgets read them)."""
        return LLMBrainState(self.stats.as_dict(), self.step)

    def restore(self, state: LLMBrainState) -> None:
        """Undo ``state``; the stats object is updated in place (wrappers share it)."""
        for name, value in state.stats.items():
            setattr(self.stats, name, value)
        self.step = state.step

    async def aclose(self) -> None:
        await self.backend.aclose()


__all__ = [
    "FALLBACK_RULE",
    "LLM_RULE",
    "MAX_PROMPT_PROFILE_CHARS",
    "LLMBrain",
    "attributes_to_weights",
    "candidate_lines",
    "describe",
    "exactly_once",
    "match_id",
    "message_lines",
    "routed_lines",
    "rule_lines",
]

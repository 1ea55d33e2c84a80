"""The LLM brain's merges: one client's buffer, several clients' buffers in one call, and the
messages a merge prompt leaves out.

Pipeline position: mixed into ``recnet.brain.llm.LLMBrain`` (the forward phase's reception and
the lazy flushes before acting). ``merge`` reads the buffered messages, the filter rules (ids in
brackets) and the original profile; accepted/rejected indices become decisions with the rule id
the model names (``rule_ids``), else ``"llm"``. The propagated text comes from the answer, the
propagated weights from the accepted messages' weights (damped, score-weighted mean, capped by
the max-share rule): no extract call. ``merge_batch`` carries up to ``llm.batch_size`` clients,
writing the shared filter memory and each router message once; a client's part that fails
validation is re-asked alone. With ``llm.coalesce_messages`` only each router's newest message
is shown; the older ones are dropped as ``superseded``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from recnet.brain.base import MergeOutcome, MergeTask, ProfileUpdate
from recnet.brain.llm_text import _merge_indices, _part, batch_agent_id
from recnet.llm.schemas import MergeOutput
from recnet.world.agents import ClientAgent
from recnet.world.buffer import RouterMessage
from recnet.world.formulas import fold_messages
from recnet.world.profile import Weights
from recnet.world.rules import Decision

if TYPE_CHECKING:
    from recnet.brain.llm import LLMBrain
    from recnet.brain.llm_text import _Calls

    _Base = LLMBrain
else:
    _Base = object

FALLBACK_RULE = "llm-fallback"
LLM_RULE = "llm"
SUPERSEDED_RULE = "superseded"


def newest_per_router(messages: Sequence[RouterMessage]) -> list[int]:
    """Positions of the messages a merge prompt shows: the newest message of each router (a
    router's later profile already folds in its earlier ones); the rest are superseded."""
    newest: dict[str, int] = {}
    for position, message in enumerate(messages):
        current = newest.get(message.router_id)
        if current is None or message.step >= messages[current].step:
            newest[message.router_id] = position
    return sorted(newest.values())


def expand(outcome: MergeOutcome, shown: Sequence[int], n_messages: int) -> MergeOutcome:
    """The outcome of a merge of the ``shown`` messages, for all ``n_messages`` (the others
    dropped as superseded)."""
    if len(shown) == n_messages:
        return outcome
    superseded: tuple[Decision, str | None] = ("dropped", SUPERSEDED_RULE)
    decisions = [superseded] * n_messages
    for position, decision in zip(shown, outcome.decisions, strict=True):
        decisions[position] = decision
    return MergeOutcome(decisions, outcome.propagated)


class MergeOperations(_Base):
    """``merge`` for the LLM brain: single, batched and coalesced (see the module docstring)."""

    async def merge(self, tasks: Sequence[MergeTask]) -> list[MergeOutcome]:
        for task in tasks:
            self._see(task.step)
        return await self._merge_coalesced(
            tasks, lambda trimmed: self._grouped(trimmed, self._merge_one, self._merge_group)
        )

    async def _merge_one(self, task: MergeTask, calls: _Calls) -> MergeOutcome:
        client, messages = task.client, task.messages
        rules = client.filters.rules if self.filtering else ()
        result = await self._call(
            calls.slot(),
            "merge",
            {
                "kind": client.kind,
                "original_profile": self._bounded(client.profile_text()),
                "propagated_profile": self._bounded(client.propagated_profile_text()),
                "filter_rules": self._rule_lines(rules),
                "messages": self._message_lines(messages, task.step),
                "max_words": self.client_words,
            },
            agent_id=client.agent_id,
            step=task.step,
            phase="receive",
            validator=_merge_indices(len(messages)),
        )
        if not result.ok:
            return self._merge_fallback(len(messages))
        return self._merge_outcome(client, messages, result.value)

    @staticmethod
    def _merge_fallback(n_messages: int) -> MergeOutcome:
        """An unusable merge answer: the messages are dropped, the profile is kept."""
        dropped: tuple[Decision, str | None] = ("dropped", FALLBACK_RULE)
        return MergeOutcome([dropped] * n_messages, None)

    def _merge_outcome(
        self, client: ClientAgent, messages: Sequence[RouterMessage], value: MergeOutput
    ) -> MergeOutcome:
        """Decisions per message (the rule id the model names, else ``llm``) and the new
        propagated profile: the answer's text, the accepted messages' weights."""
        rules = client.filters.rules if self.filtering else ()
        rule_ids = {rule.rule_id for rule in rules}
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
        """The offline brain's fold of the accepted messages' weights (one formula)."""
        share = client.filters.max_share() if self.filtering else 1.0
        return fold_messages(
            client, accepted, self.propagation.merge_damping, share, self.profile_size
        )

    async def _merge_coalesced(
        self,
        tasks: Sequence[MergeTask],
        run: Callable[[Sequence[MergeTask]], Awaitable[list[MergeOutcome]]],
    ) -> list[MergeOutcome]:
        """Merge only the newest message of each router in every task (``llm.coalesce``); the
        older ones are dropped as superseded."""
        if not self.coalesce:
            return await run(tasks)
        shown = [newest_per_router(task.messages) for task in tasks]
        trimmed = [
            MergeTask(task.client, [task.messages[p] for p in positions], task.step)
            for task, positions in zip(tasks, shown, strict=True)
        ]
        outcomes = await run(trimmed)
        return [
            expand(outcome, positions, len(task.messages))
            for task, positions, outcome in zip(tasks, shown, outcomes, strict=True)
        ]

    # batched merge -----------------------------------------------------------------------------
    async def _merge_group(self, group: Sequence[MergeTask], calls: _Calls) -> list[MergeOutcome]:
        """Up to ``llm.batch_size`` clients' merges in one ``merge_batch`` call."""
        from recnet.brain.llm_text import _merge_indices

        ids = [task.client.agent_id for task in group]
        shared = self.shared_rules
        labels: dict[tuple[str, int], str] = {}  # (router, sent step) → label, texts once
        texts: list[str] = []
        blocks = []
        for task in group:
            client = task.client
            rules = tuple(client.filters.rules) if self.filtering else ()
            lines = []
            for index, message in enumerate(task.messages):
                key = (message.router_id, message.step)
                if key not in labels:
                    labels[key] = f"<{message.router_id}@{message.step}>"
                    texts.append(f"{labels[key]}: " + self._message_text(message))
                lines.append(f"[{index}] {labels[key]} {message.score:.2f}")
            rule_text = (
                "shared" if rules == shared and self.filtering else "\n" + self._rule_lines(rules)
            )
            blocks.append(
                f"### {client.agent_id} ({client.kind})\n"
                f"Original profile: {self._bounded(client.profile_text())}\n"
                f"Propagated profile so far: "
                f"{self._bounded(client.propagated_profile_text()) or '(none)'}\n"
                f"Filter rules: {rule_text}\n"
                f"Messages (step now {task.step}):\n" + "\n".join(lines)
            )
        step = max(task.step for task in group)
        result = await self._call(
            calls.slot(),
            "merge_batch",
            {
                "filter_rules": self._rule_lines(shared if self.filtering else ()),
                "router_messages": "\n".join(texts),
                "clients": "\n\n".join(blocks),
                "max_words": self.client_words,
            },
            agent_id=batch_agent_id(ids),
            step=step,
            phase="receive",
            parts=len(group),
        )
        parts = result.value.clients if result.ok else {}
        out: list[MergeOutcome] = []
        for task in group:
            try:
                value = MergeOutput.model_validate(_part(parts, task.client.agent_id))
                _merge_indices(len(task.messages))(value)
                if set(value.accepted) | set(value.rejected) != set(range(len(task.messages))):
                    raise ValueError("every message must be decided")
            except (ValidationError, ValueError):
                out.append(await self._merge_one(task, calls))  # re-asked alone
                continue
            out.append(self._merge_outcome(task.client, task.messages, value))
        return out

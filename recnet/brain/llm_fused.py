"""The LLM brain's economical operations: fused choose+merge, fused reflection, batched calls.

Pipeline position: mixed into ``recnet.brain.llm.LLMBrain``; the phases never see it. Which
operations run fused or batched is ``llm.fuse``, ``llm.reflect_on`` and ``llm.batch_size``:

* *choose_merge* — a user with buffered messages reads them with its filter rules while it
  chooses: one call returns the choice and the updated propagated profile (the merge's
  decisions per message, rule ids as in ``merge``). Without messages the plain ``predict`` runs.
* *reflect_fused* — user and item reflections of one interaction in one call, each revised
  profile with its attributes (no ``extract`` call). Each agent's part is validated on its own;
  a part that is missing or invalid is re-asked alone with the unfused ``reflect_*`` + extract.
* ``reflect_on: wrong`` — a right choice writes no text: weights are reinforced numerically
  (``recnet.brain.offline.reinforce``), as the offline brain does.
* *batches* — ``summarize_batch``, ``merge_batch`` and ``extract_batch`` carry up to
  ``llm.batch_size`` independent agents of one phase; each agent's part is validated on its own
  and a failing part is re-asked alone with the single operation.

Texts in prompts are bounded (``llm.max_profile_chars``, ``llm.max_message_chars``) and every
template puts its static instructions first and the agent's data last, so a server's prefix
cache can reuse the instructions across agents.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from recnet.brain.base import MergeOutcome, ProfileUpdate, SummarizeTask
from recnet.brain.llm_merge import expand, newest_per_router
from recnet.brain.llm_text import _part, batch_agent_id, chunks
from recnet.llm.schemas import ChooseMergeOutput, MergeOutput, ReflectedProfile
from recnet.world.agents import ClientAgent
from recnet.world.profile import Weights

if TYPE_CHECKING:
    from recnet.brain.llm import LLMBrain
    from recnet.brain.llm_text import _Calls

    _Base = LLMBrain
else:
    _Base = object

EXTRACT_CATEGORIES = ["genre", "era", "mood", "theme", "tag", "title"]


class EconomicalOperations(_Base):
    """Fused and batched variants of the LLM brain's operations (see the module docstring)."""

    # choose + merge ------------------------------------------------------------------------------
    async def _choose_merge(
        self, calls: _Calls, task: Any, shown: Sequence[ClientAgent], ids: Sequence[str]
    ) -> tuple[Any, MergeOutcome]:
        """One call: the user's merge of ``task.messages`` and its choice among ``shown``."""
        from recnet.brain.llm_text import _merge_indices, _one_of

        user, every = task.user, task.messages
        shown_positions = newest_per_router(every) if self.coalesce else list(range(len(every)))
        messages = [every[p] for p in shown_positions]
        rules = user.filters.rules if self.filtering else ()
        check_choice, check_merge = _one_of(ids), _merge_indices(len(messages))

        def check(value: ChooseMergeOutput) -> None:
            check_choice(value)  # type: ignore[arg-type]
            check_merge(value)  # type: ignore[arg-type]

        result = await self._call(
            calls.slot(),
            "choose_merge",
            {
                "filter_rules": self._rule_lines(rules),
                "user_profile": self._bounded(user.profile_text()),
                "propagated_profile": self._bounded(user.propagated_profile_text()),
                "messages": self._message_lines(messages, task.step),
                "candidates": self._candidate_lines(shown),
                "max_words": self.client_words,
            },
            agent_id=user.agent_id,
            step=task.step,
            phase="interact",
            validator=check,
        )
        if not result.ok:
            return result, self._merge_fallback(len(every))
        value: ChooseMergeOutput = result.value
        as_merge = MergeOutput(
            propagated_profile=value.propagated_profile,
            accepted=value.accepted,
            rejected=value.rejected,
            rule_ids=value.rule_ids,
        )
        merged = self._merge_outcome(user, messages, as_merge)
        return result, expand(merged, shown_positions, len(every))

    # reflection ----------------------------------------------------------------------------------
    async def _reflect_fused(
        self,
        calls: _Calls,
        task: Any,
        agents: Sequence[tuple[ClientAgent, str]],
        outcome: str,
    ) -> dict[str, ProfileUpdate]:
        """User and item reflections (and their attributes) in one call; a part that fails is
        re-asked alone with the unfused operation."""
        user, positive, negative = task.user, task.positive, task.negative
        ids = [agent.agent_id for agent, _ in agents]
        result = await self._call(
            calls.slot(),
            "reflect_fused",
            {
                "outcome": outcome,
                "agents": ids,
                "user_id": user.agent_id,
                "user_profile": self._bounded(user.profile_text()),
                "consumed_id": positive.agent_id,
                "consumed_profile": self._bounded(self._describe(positive)),
                "other_id": negative.agent_id,
                "other_profile": self._bounded(self._describe(negative)),
                "categories": EXTRACT_CATEGORIES,
                "max_words": self.client_words,
            },
            agent_id=user.agent_id,
            step=task.step,
            phase="interact",
            parts=len(agents),
        )
        parts = result.value.profiles if result.ok else {}
        updates: dict[str, ProfileUpdate] = {}
        retry: list[tuple[ClientAgent, str]] = []
        for agent, role in agents:
            try:
                part = ReflectedProfile.model_validate(_part(parts, agent.agent_id))
            except ValidationError:
                retry.append((agent, role))
                continue
            text = part.updated_profile.strip()
            if not text or text == agent.profile_text().strip():
                continue
            weights = self._weights_of(part.attributes)
            if weights:
                updates[agent.agent_id] = ProfileUpdate(weights, text=text)
            else:  # no usable attributes: extract them from the new text
                extracted = await self._extract(calls.slot(), agent, text, task.step)
                updates[agent.agent_id] = ProfileUpdate(extracted, text=text)
        if retry:
            updates.update(await self._reflect_each(calls, task, retry, outcome))
        return updates

    async def _reflect_each(
        self,
        calls: _Calls,
        task: Any,
        agents: Sequence[tuple[ClientAgent, str]],
        outcome: str,
    ) -> dict[str, ProfileUpdate]:
        """The unfused reflections (``reflect_user`` / ``reflect_item``) of ``agents``, then
        the extraction of the texts that changed (batched when several)."""
        from recnet.brain.llm_text import _together

        user, positive, negative = task.user, task.positive, task.negative
        reflections: list[tuple[ClientAgent, Awaitable[Any]]] = []
        for agent, role in agents:
            if role == "user":
                variables: dict[str, Any] = {
                    "profile": self._bounded(user.profile_text()),
                    "consumed_item": self._bounded(self._describe(positive)),
                    "other_item": self._bounded(self._describe(negative)),
                    "outcome": outcome,
                    "max_words": self.client_words,
                }
                operation = "reflect_user"
            else:
                variables = {
                    "profile": self._bounded(agent.profile_text()),
                    "user_profile": self._bounded(user.profile_text()),
                    "role": role,
                    "outcome": outcome,
                    "max_words": self.client_words,
                }
                operation = "reflect_item"
            call = self._call(
                calls.slot(),
                operation,
                variables,
                agent_id=agent.agent_id,
                step=task.step,
                phase="interact",
            )
            reflections.append((agent, call))
        results = await _together([call for _, call in reflections])
        changed: list[tuple[ClientAgent, str]] = []
        for (agent, _), result in zip(reflections, results, strict=True):
            if not result.ok:
                continue  # fallback: the agent keeps its profile
            text = result.value.updated_profile.strip()
            if text and text != agent.profile_text().strip():
                changed.append((agent, text))
        weights = await self._extract_many(calls, changed, task.step)
        return {
            agent.agent_id: ProfileUpdate(new_weights, text=text)
            for (agent, text), new_weights in zip(changed, weights, strict=True)
        }

    async def _extract_many(
        self, calls: _Calls, changed: Sequence[tuple[ClientAgent, str]], step: int
    ) -> list[Weights]:
        """Weights of several new texts: one ``extract_batch`` call per ``llm.batch_size``
        texts, a part that fails re-asked alone with ``extract``."""
        from recnet.brain.llm_text import _together

        if self.batch_size <= 1 or len(changed) <= 1:
            return await _together(
                [self._extract(calls.slot(), agent, text, step) for agent, text in changed]
            )
        out: list[Weights] = []
        for group in chunks(changed, self.batch_size):
            ids = [agent.agent_id for agent, _ in group]
            blocks = "\n\n".join(
                f"### {agent.agent_id} ({agent.kind})\n{self._bounded(text)}"
                for agent, text in group
            )
            result = await self._call(
                calls.slot(),
                "extract_batch",
                {"profiles": blocks, "categories": EXTRACT_CATEGORIES},
                agent_id=batch_agent_id(ids),
                step=step,
                phase="interact",
            )
            parts = result.value.profiles if result.ok else {}
            for agent, text in group:
                part = _part(parts, agent.agent_id)
                weights = self._weights_of(part) if isinstance(part, dict) else {}
                if not weights:
                    weights = await self._extract(calls.slot(), agent, text, step)
                out.append(weights)
        return out

    def _weights_of(self, attributes: Any) -> Weights:
        from recnet.brain.llm_text import attributes_to_weights

        if not isinstance(attributes, dict):
            return {}
        clean = {
            str(category): [str(v) for v in values]
            for category, values in attributes.items()
            if isinstance(values, list)
        }
        return attributes_to_weights(clean, self.profile_size)

    # batched summarize -------------------------------------------------------------------------
    async def _summarize_group(
        self, group: Sequence[SummarizeTask], calls: _Calls
    ) -> list[ProfileUpdate]:
        """Up to ``llm.batch_size`` routers in one ``summarize_batch`` call."""
        from recnet.brain.llm_text import routed_lines

        ids = [task.router.router_id for task in group]
        blocks = "\n\n".join(
            f"### {task.router.router_id}\nCurrent profile (empty if new): "
            f"{self._bounded(task.router.profile_text())}\nAttributes routed to it in the latest "
            f"step, from members whose preferences changed: {'; '.join(routed_lines(task.routed))}"
            for task in group
        )
        step = max(task.step for task in group)
        result = await self._call(
            calls.slot(),
            "summarize_batch",
            {"routers": blocks, "max_words": self.router_words},
            agent_id=batch_agent_id(ids),
            step=step,
            phase="integrate",
            parts=len(group),
        )
        parts = result.value.profiles if result.ok else {}
        out: list[ProfileUpdate] = []
        for task in group:
            part = _part(parts, task.router.router_id)
            if isinstance(part, dict):
                part = part.get("profile")
            if isinstance(part, str) and part.strip():
                out.append(self._router_update(task, part.strip()))
            else:  # re-asked alone
                out.append(await self._summarize_one(task, calls))
        return out

    async def _grouped(
        self,
        tasks: Sequence[Any],
        one: Callable[[Any, _Calls], Awaitable[Any]],
        group: Callable[[Sequence[Any], _Calls], Awaitable[list[Any]]],
    ) -> list[Any]:
        """Run ``tasks`` one call each, or in groups of ``llm.batch_size`` (a group of one is
        the single operation); records keep task order."""
        if self.batch_size <= 1 or len(tasks) <= 1:
            calls = [self._new_calls() for _ in tasks]
            return await self._batch([one(t, c) for t, c in zip(tasks, calls, strict=True)], calls)
        groups = chunks(tasks, self.batch_size)
        calls = [self._new_calls() for _ in groups]
        coros = [
            group(g, c) if len(g) > 1 else _single(one, g[0], c)
            for g, c in zip(groups, calls, strict=True)
        ]
        results = await self._batch(coros, calls)
        return [outcome for part in results for outcome in part]


async def _single(one: Callable[[Any, Any], Awaitable[Any]], task: Any, calls: Any) -> list[Any]:
    return [await one(task, calls)]

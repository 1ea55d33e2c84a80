"""How the LLM brain makes calls: a bounded-concurrency batch of structured calls whose records
reach the trace in task and call order, whatever order the answers arrive in.

Pipeline position: the base of ``recnet.brain.llm.LLMBrain``. Its public ``ask`` is what other
components (the LLM critic, ``recnet.critic.llm``) use to call the model through the brain's
backend, prompt pack, stats and trace hook; nothing outside the brain touches the private parts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recnet.brain.base import OperationCounts
from recnet.config.scenario import LLMSettings, Scenario
from recnet.llm.pack import PromptPack
from recnet.llm.protocol import LLMBackend
from recnet.llm.stats import LLMStats
from recnet.llm.structured import CallMeta, StructuredResult, call_structured, run_concurrently

Record = dict[str, Any]
OnRecord = Callable[[Record], None]


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


class LLMCaller:
    """Structured calls through one backend and pack (the attributes are set by the brain)."""

    scenario: Scenario
    settings: LLMSettings
    backend: LLMBackend
    pack: PromptPack
    stats: LLMStats
    on_record: OnRecord | None
    run_id: str | None
    operations: OperationCounts
    _slots: asyncio.Semaphore | None = None
    _slots_loop: asyncio.AbstractEventLoop | None = None

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

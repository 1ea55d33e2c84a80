"""The LLM brain's call policy as arithmetic: which calls an operation would cost.

Pipeline position: beside the brains. The offline brain counts, for every operation it performs,
the LLM calls the LLM brain (``recnet.brain.llm``) would make for it under ``scenario.llm``
(fused operations, reflection only after wrong choices, batched summarize/merge/extract); the dry
run (``recnet.dry_run``) prices those counts. Keep it in step with the LLM brain's policy (the
tests compare the two on the same run).
"""

from __future__ import annotations

import math

from recnet.brain.base import OperationCounts
from recnet.config.scenario import LLMSettings


class CallPlan:
    """Counts the calls of the LLM policy of ``settings`` into ``counts``."""

    def __init__(self, settings: LLMSettings, counts: OperationCounts) -> None:
        self.fuse = set(settings.fuse)
        self.reflect_on = settings.reflect_on
        self.batch_size = settings.batch_size
        self.counts = counts
        #: agents carried by the batched calls, per operation (their mean sizes a prompt)
        self.parts: dict[str, int] = {}

    def interaction(self, *, merged: bool, correct: bool) -> None:
        """One interaction: the choice (fused with the user's merge when ``merged``), then the
        reflections the policy asks for."""
        self.counts.add("choose_merge" if merged else "predict")
        if correct and self.reflect_on == "wrong":
            return  # a right choice reinforces the weights numerically: no call
        if "reflect" in self.fuse:
            self.counts.add("reflect_fused")
            return
        n_items = 1 if correct else 2
        self.counts.add("reflect_user")
        self.counts.add("reflect_item", n_items)
        self.batched("extract", 1 + n_items)  # every changed text is re-extracted

    def batched(self, operation: str, n: int) -> None:
        """``n`` independent ``operation``s of one phase: batches of ``llm.batch_size`` (a batch
        of one is the single operation)."""
        if n <= 0:
            return
        if self.batch_size <= 1:
            self.counts.add(operation, n)
            return
        full, rest = divmod(n, self.batch_size)
        batch = f"{operation}_batch"
        if full:
            self.counts.add(batch, full)
        if rest == 1:
            self.counts.add(operation)
        elif rest:
            self.counts.add(batch)
        carried = full * self.batch_size + (rest if rest > 1 else 0)
        if carried:
            self.parts[batch] = self.parts.get(batch, 0) + carried

    def batches(self, n: int) -> int:
        """How many calls ``batched`` makes for ``n`` operations."""
        return n if self.batch_size <= 1 else math.ceil(n / self.batch_size)

"""Mass-fallback guard: a run whose answers are mostly not the model's stops, resumably.

Pipeline position: attached to a run's ``LLMStats`` by ``factory.build_backend``; every finished
structured call (``structured.call_structured``) reports whether it fell back. Per operation the
guard keeps the outcomes of the last ``llm.fallback.window`` calls; once it has seen
``min_calls`` of them and the share that fell back exceeds ``llm.fallback.max_share``, it raises
``FallbackLimitExceeded``. That error is a ``BudgetExceeded`` — the runner's resumable stop: the
state of the last checkpoint is kept and ``recnet simulate --resume`` continues once the cause
(a server that ignores the schema, a wrong model, a prompt pack that does not fit) is fixed.
"""

from __future__ import annotations

from collections import deque

from recnet.config.llm_settings import FallbackSettings
from recnet.errors import BudgetExceeded


class FallbackLimitExceeded(BudgetExceeded):
    """Too many answers of one operation fell back; the run stops with its state saved."""

    def __init__(self, message: str, remedy: str | None = None, *, operation: str) -> None:
        super().__init__(message, remedy)
        self.operation = operation

    def raised_limit(self) -> str | None:
        """No budget cap to raise: resuming without fixing the cause stops again."""
        return None


class FallbackGuard:
    """Watches the fallback share of each operation over a sliding window of calls."""

    def __init__(self, settings: FallbackSettings) -> None:
        self.settings = settings
        self._outcomes: dict[str, deque[bool]] = {}

    def observe(self, operation: str, *, fell_back: bool, error: str | None = None) -> None:
        s = self.settings
        window = self._outcomes.setdefault(operation, deque(maxlen=s.window))
        window.append(fell_back)
        seen = len(window)
        if seen < min(s.min_calls, s.window) or not fell_back:
            return
        failed = sum(window)
        if failed / seen <= s.max_share:
            return
        last = f"; last error: {' '.join(error.split())[:200]}" if error else ""
        raise FallbackLimitExceeded(
            f"{failed} of the last {seen} {operation} answers fell back to the reference policy "
            f"({failed / seen:.0%}, more than llm.fallback.max_share={s.max_share:g}): metrics "
            "from such a run would be the reference policy's, not the model's; check llm.model "
            "and llm.base_url (a server that ignores response_format needs "
            f"llm.structured_output: json_text){last}",
            "check llm.model and llm.base_url; a server that ignores response_format needs "
            "llm.structured_output: json_text; then resume (raise llm.fallback.max_share only to "
            "accept the fallbacks)",
            operation=operation,
        )

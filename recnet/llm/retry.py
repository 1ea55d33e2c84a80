"""Retry wrapper: bounded attempts with exponential backoff, jitter and Retry-After.

Pipeline position: directly around the provider (provider ← retry ← rate limit ← budget ← cache).
Only ``RetryableError`` (429, 5xx, timeouts, connection errors) is retried; every other error —
including other 4xx — passes through at once. The wait before retry n (n = 1, 2, ...) is
``min(max_wait, initial_wait * 2**(n-1)) + U(0, jitter)``, raised to the server's Retry-After when
that is longer (Retry-After is honoured even beyond ``max_wait``). ``sleep`` and ``rng`` are
injectable so tests measure waits without wall time.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import numpy as np
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from recnet.config.scenario import RetrySettings
from recnet.errors import BackendError
from recnet.llm.failures import RetryableError
from recnet.llm.protocol import LLMBackend, LLMRequest, LLMResponse
from recnet.llm.stats import LLMStats

Sleep = Callable[[float], Awaitable[None]]


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RetryableError)


class RetryingBackend:
    """Retries transient provider failures; counts each extra attempt in ``stats.retries``."""

    def __init__(
        self,
        inner: LLMBackend,
        settings: RetrySettings,
        *,
        stats: LLMStats | None = None,
        sleep: Sleep | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.inner = inner
        self.settings = settings
        self.stats = stats if stats is not None else LLMStats()
        self._sleep: Sleep = sleep or asyncio.sleep
        # Jitter only spreads retries in time; it never changes an answer. Seeded by default.
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self.waits: list[float] = []  # every wait chosen, in order (for diagnostics and tests)

    def backoff(self, retry_number: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        s = self.settings
        base = min(s.max_wait, s.initial_wait * (2.0 ** (retry_number - 1)))
        wait = base + (float(self._rng.uniform(0.0, s.jitter)) if s.jitter > 0 else 0.0)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        wait = self.backoff(state.attempt_number, retry_after)
        self.waits.append(wait)
        return wait

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.retries += 1

    async def complete(self, request: LLMRequest) -> LLMResponse:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        number = 0
        try:
            async for attempt in retrying:
                number = attempt.retry_state.attempt_number
                with attempt:
                    response = await self.inner.complete(request)
        except RetryableError as exc:
            raise BackendError(
                f"{request.describe()} failed after {number} attempts: {exc.message}",
                f"{exc.remedy + '; ' if exc.remedy else ''}raise llm.retry.max_attempts if the "
                "failures are transient, then continue with "
                "`recnet simulate --resume <run.sqlite>`",
            ) from exc
        return dataclasses.replace(response, attempts=response.attempts + number - 1)

    async def aclose(self) -> None:
        await self.inner.aclose()

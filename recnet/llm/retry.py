"""Retry wrapper: exponential backoff with jitter and Retry-After; a deadline for rate limits.

Pipeline position: directly around the provider (provider ← retry ← rate limit ← budget ← cache).
Only ``RetryableError`` (429, 5xx, timeouts, connection errors) is retried; every other error —
including other 4xx — passes through at once. The wait before retry n (n = 1, 2, ...) is
``min(max_wait, initial_wait * 2**(n-1)) + U(0, jitter)``, raised to the server's Retry-After when
that is longer (Retry-After is honoured even beyond ``max_wait``).

Two budgets, because the failures differ: a rate limit (429) says "later", and a provider's
rate-limit window is about a minute, so 429s are retried until ``rate_limit_deadline`` seconds
have passed since the first attempt (or until the server's Retry-After points past it); every
other transient failure counts against ``max_attempts``. Elapsed time is the larger of the wall
clock and the waits taken, so the deadline holds with an injected ``sleep`` too. ``sleep`` and
``rng`` are injectable so tests measure waits without wall time.
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
)

from recnet.config.scenario import RetrySettings
from recnet.errors import BackendError
from recnet.llm.failures import RetryableError
from recnet.llm.protocol import LLMBackend, LLMRequest, LLMResponse
from recnet.llm.stats import LLMStats

Sleep = Callable[[float], Awaitable[None]]


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RetryableError)


def _is_rate_limit(exc: BaseException | None) -> bool:
    return isinstance(exc, RetryableError) and exc.is_rate_limit


class _CallBudget:
    """When to give up on one request: a deadline for rate limits, an attempt cap otherwise."""

    def __init__(self, settings: RetrySettings) -> None:
        self.settings = settings
        self.other_failures = 0
        self.rate_limited_for: float | None = None  # set when a 429 ended the retries

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if _is_rate_limit(exc):
            elapsed = max(state.seconds_since_start or 0.0, state.idle_for)
            deadline = self.settings.rate_limit_deadline
            retry_after = getattr(exc, "retry_after", None)
            if elapsed >= deadline or (
                retry_after is not None and elapsed + retry_after > deadline
            ):
                self.rate_limited_for = elapsed
                return True
            return False
        self.other_failures += 1
        return self.other_failures >= self.settings.max_attempts


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
        budget = _CallBudget(self.settings)
        retrying = AsyncRetrying(
            stop=budget,
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
            if budget.rate_limited_for is not None:
                raise BackendError(
                    f"{request.describe()} was still rate limited after "
                    f"{budget.rate_limited_for:.0f} s ({number} attempts): {exc.message}",
                    "raise llm.retry.rate_limit_deadline, lower llm.max_concurrency or set "
                    "llm.rate_limit.requests_per_minute, then continue with "
                    "`recnet simulate --resume <run.sqlite>`",
                ) from exc
            raise BackendError(
                f"{request.describe()} failed after {number} attempts: {exc.message}",
                f"{exc.remedy + '; ' if exc.remedy else ''}raise llm.retry.max_attempts if the "
                "failures are transient, then continue with "
                "`recnet simulate --resume <run.sqlite>`",
            ) from exc
        return dataclasses.replace(response, attempts=response.attempts + number - 1)

    async def aclose(self) -> None:
        await self.inner.aclose()

"""Client-side rate limit: requests-per-minute and tokens-per-minute token buckets.

Pipeline position: around the retry wrapper (provider ← retry ← rate limit ← budget ← cache), so
one logical request takes one request slot however many retries it needs. Each bucket refills at
``per_minute / 60`` per second and holds at most one second's worth (at least one request), so
traffic is smooth rather than bursty. Before a call the token bucket is charged an estimate
(prompt characters / 4 + ``max_tokens``); after the call the charge is corrected to the real
usage. A request larger than the bucket waits for a full bucket and then runs it into debt.
Waiters are served first come, first served. ``clock`` and ``sleep`` are injectable for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from recnet.config.scenario import RateLimitSettings
from recnet.llm.protocol import LLMBackend, LLMRequest, LLMResponse, estimate_prompt_tokens

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """A refilling allowance of ``per_minute`` units per minute."""

    def __init__(self, per_minute: float, clock: Clock) -> None:
        self.rate = per_minute / 60.0  # units per second
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._last) * self.rate)
        self._last = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` (capped at the capacity) is available; 0 when it is now."""
        self._refill()
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        """Spend ``amount`` (negative gives back); the level may go below zero (debt)."""
        self._refill()
        self.level = min(self.capacity, self.level - amount)


def estimate_request_tokens(request: LLMRequest) -> int:
    """Tokens a request may use: estimated prompt plus the completion cap."""
    return estimate_prompt_tokens(request.messages) + request.max_tokens


class RateLimitedBackend:
    """Delays calls so they stay within ``requests_per_minute`` and ``tokens_per_minute``."""

    def __init__(
        self,
        inner: LLMBackend,
        settings: RateLimitSettings,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.inner = inner
        self.settings = settings
        self._clock: Clock = clock or time.monotonic
        self._sleep: Sleep = sleep or asyncio.sleep
        self._requests = (
            TokenBucket(settings.requests_per_minute, self._clock)
            if settings.requests_per_minute
            else None
        )
        self._tokens = (
            TokenBucket(settings.tokens_per_minute, self._clock)
            if settings.tokens_per_minute
            else None
        )
        self._lock = asyncio.Lock()
        self.waited = 0.0  # total seconds spent waiting (diagnostics)

    async def _acquire(self, tokens: int) -> None:
        async with self._lock:
            while True:
                wait = 0.0
                if self._requests is not None:
                    wait = max(wait, self._requests.wait_time(1))
                if self._tokens is not None:
                    wait = max(wait, self._tokens.wait_time(tokens))
                if wait <= 0.0:
                    break
                self.waited += wait
                await self._sleep(wait)
            if self._requests is not None:
                self._requests.take(1)
            if self._tokens is not None:
                self._tokens.take(tokens)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self._requests is None and self._tokens is None:
            return await self.inner.complete(request)
        estimate = estimate_request_tokens(request)
        await self._acquire(estimate)
        try:
            response = await self.inner.complete(request)
        except BaseException:
            if self._tokens is not None:
                self._tokens.take(-estimate)  # nothing was generated; give the estimate back
            raise
        if self._tokens is not None:
            self._tokens.take(response.tokens_in + response.tokens_out - estimate)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

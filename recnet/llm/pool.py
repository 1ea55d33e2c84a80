"""Several LLM servers behind one backend: least outstanding requests, per-server rate limits.

Pipeline position: the provider layer of the backend stack when ``llm.base_url`` lists more than
one endpoint (``factory.build_backend``): retry ← budget ← cache wrap the pool, so a retried call
goes to whichever server is least busy at that moment, and the budget and cache count calls once
whatever server answered. Each endpoint is its own provider (``OpenAIBackend`` for its URL)
wrapped in its own rate limit (the endpoint's ``requests_per_minute`` / ``tokens_per_minute``,
else ``llm.rate_limit``), so a fleet of vLLM servers with different capacities is each kept
within its own limits.

Dispatch: the endpoint with the fewest requests in flight per unit of weight (a request waiting
for its endpoint's rate limit counts as in flight); ties go to the endpoint listed first. Which
server answered never enters the cache key: any server of the fleet is assumed to serve the same
model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recnet.llm.protocol import LLMBackend, LLMRequest, LLMResponse


@dataclass
class Endpoint:
    """One server of the pool and its counters."""

    url: str
    backend: LLMBackend
    weight: float = 1.0
    outstanding: int = 0
    calls: int = 0
    failures: int = 0


class EndpointPool:
    """``LLMBackend`` that spreads calls over several endpoints by least outstanding requests."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        if not endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self.endpoints = list(endpoints)

    def pick(self) -> Endpoint:
        """The endpoint with the fewest requests in flight per weight (first listed on a tie)."""
        return min(self.endpoints, key=lambda e: e.outstanding / e.weight)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        endpoint = self.pick()
        endpoint.outstanding += 1
        endpoint.calls += 1
        try:
            return await endpoint.backend.complete(request)
        except BaseException:
            endpoint.failures += 1
            raise
        finally:
            endpoint.outstanding -= 1

    def calls_per_endpoint(self) -> dict[str, int]:
        """URL → calls sent to it so far (failed ones included)."""
        return {e.url: e.calls for e in self.endpoints}

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.backend.aclose()

"""Several LLM servers: calls spread over two local servers through the real openai client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from llm_server import Fault, LLMTestServer
from pydantic import ValidationError

from recnet.config.scenario import LLMSettings
from recnet.llm.factory import build_backend
from recnet.llm.pool import Endpoint, EndpointPool
from recnet.llm.protocol import LLMRequest, LLMResponse


def answer(request_json: dict[str, Any]) -> str:
    return json.dumps({"ok": True})


@pytest.fixture
def two_servers() -> Iterator[tuple[LLMTestServer, LLMTestServer]]:
    with LLMTestServer(responder=answer) as a, LLMTestServer(responder=answer) as b:
        a.set_latency(0.05)
        b.set_latency(0.05)
        yield a, b


def settings(**fields: Any) -> LLMSettings:
    base: dict[str, Any] = {
        "backend": "openai",
        "model": "test-model",
        "retry": {"initial_wait": 0.0, "jitter": 0.0, "timeout": 5.0, "max_attempts": 3},
        "cache": {"enabled": False},
    }
    return LLMSettings.model_validate({**base, **fields})


def request(n: int) -> LLMRequest:
    return LLMRequest(model="test-model", messages=({"role": "user", "content": f"q{n}"},))


async def ask(backend: Any, n: int) -> list[LLMResponse]:
    try:
        return await asyncio.gather(*(backend.complete(request(i)) for i in range(n)))
    finally:
        await backend.aclose()


def test_calls_spread_over_two_servers(two_servers: tuple[LLMTestServer, LLMTestServer]) -> None:
    a, b = two_servers
    backend = build_backend(settings(base_url=[a.base_url, b.base_url]))
    answers = asyncio.run(ask(backend, 12))
    assert [json.loads(r.text) for r in answers] == [{"ok": True}] * 12
    # concurrent calls go to the server with fewer in flight: both are used, evenly
    assert a.count() == 6 and b.count() == 6


def test_weights_and_a_failing_server(two_servers: tuple[LLMTestServer, LLMTestServer]) -> None:
    a, b = two_servers
    endpoints = [{"url": a.base_url, "weight": 3.0}, {"url": b.base_url, "weight": 1.0}]
    backend = build_backend(settings(endpoints=endpoints))
    asyncio.run(ask(backend, 8))
    assert (a.count(), b.count()) == (6, 2)  # in flight per weight: 3 to 1
    # a server error is retried, and the retry goes to the least busy server
    a.plan(Fault.server_error())
    backend = build_backend(settings(base_url=[a.base_url, b.base_url]))
    before = a.count() + b.count()
    answers = asyncio.run(ask(backend, 1))
    assert len(answers) == 1 and a.count() + b.count() == before + 2


def test_each_server_has_its_own_rate_limit() -> None:
    built = build_backend(
        settings(
            endpoints=[
                {"url": "http://127.0.0.1:9/v1", "requests_per_minute": 5},
                {"url": "http://127.0.0.1:10/v1"},
            ],
            rate_limit={"requests_per_minute": 60},
        )
    )
    pool = built
    while not isinstance(pool, EndpointPool):  # budget ← retry ← pool
        pool = pool.inner  # type: ignore[attr-defined]
    limits = [e.backend.settings.requests_per_minute for e in pool.endpoints]  # type: ignore[attr-defined]
    assert limits == [5, 60]
    asyncio.run(pool.aclose())


def test_bad_server_lists_are_refused_clearly() -> None:
    with pytest.raises(ValidationError, match="empty list"):
        settings(base_url=[])
    with pytest.raises(ValidationError, match="either base_url or endpoints"):
        settings(base_url="http://127.0.0.1:1/v1", endpoints=[{"url": "http://127.0.0.1:2/v1"}])


def test_pool_picks_least_outstanding_per_weight() -> None:
    class Idle:
        async def complete(self, request: LLMRequest) -> LLMResponse:
            raise AssertionError("not called")

        async def aclose(self) -> None:
            return None

    first, second = Endpoint("a", Idle(), weight=2.0), Endpoint("b", Idle())
    pool = EndpointPool([first, second])
    assert pool.pick() is first  # tie: the first listed
    first.outstanding = 2
    second.outstanding = 1
    assert pool.pick() is first  # 2 / 2.0 == 1 / 1.0: tie again
    first.outstanding = 3
    assert pool.pick() is second

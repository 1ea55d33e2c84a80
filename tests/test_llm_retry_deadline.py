"""Retries that match real servers (issue 11, item 8), through the real openai client.

A LiteLLM proxy puts the wait in ``llm_provider-retry-after``; rate limits (429) are retried until
``llm.retry.rate_limit_deadline`` while other transient failures keep the attempt cap; a custom
backend gets the same policy by raising ``RetryableError.rate_limited``. Waits are recorded by a
fake sleep, never measured on the wall clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from llm_server import Fault, LLMTestServer

from recnet.config.scenario import LLMSettings, RetrySettings
from recnet.errors import BackendError
from recnet.llm.factory import build_backend
from recnet.llm.failures import RetryableError
from recnet.llm.protocol import LLMRequest
from recnet.llm.retry import RetryingBackend
from recnet.llm.scripted import ScriptedBackend
from recnet.llm.stats import LLMStats

KEY_VAR = "RECNET_TEST_LLM_KEY"


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMTestServer]:
    monkeypatch.setenv(KEY_VAR, "sk-test")
    with LLMTestServer(responder=lambda _body: json.dumps({"ok": True})) as srv:
        yield srv


def settings_for(server: LLMTestServer, **retry: Any) -> LLMSettings:
    return LLMSettings.model_validate(
        {
            "backend": "openai",
            "model": "test-model",
            "base_url": server.base_url,
            "api_key_env": KEY_VAR,
            "retry": {"initial_wait": 0.25, "jitter": 0.0, "timeout": 5.0, **retry},
            "cache": {"enabled": False},
        }
    )


def request() -> LLMRequest:
    return LLMRequest(
        model="test-model",
        messages=({"role": "user", "content": "hi"},),
        operation="predict",
        agent_id="u:1",
    )


@pytest.mark.parametrize(
    ("fault", "expected_wait"),
    [
        (Fault.rate_limit(9, header="llm_provider-retry-after"), 9.0),
        (Fault.rate_limit(2500, header="retry-after-ms"), 2.5),
        (Fault.rate_limit(4), 4.0),
    ],
)
async def test_wait_headers_are_honoured(
    server: LLMTestServer, fault: Fault, expected_wait: float
) -> None:
    sleep = FakeSleep()
    backend = build_backend(settings_for(server), stats=LLMStats(), sleep=sleep)
    server.plan(fault)
    response = await backend.complete(request())
    await backend.aclose()
    assert json.loads(response.text) == {"ok": True}
    assert sleep.waits == [expected_wait]


async def test_litellm_proxy_wait_is_read(server: LLMTestServer) -> None:
    server.set_litellm_headers(True)  # every 429 carries only llm_provider-retry-after
    sleep = FakeSleep()
    backend = build_backend(settings_for(server), stats=LLMStats(), sleep=sleep)
    server.plan(Fault.rate_limit(11), Fault.rate_limit(6))
    await backend.complete(request())
    await backend.aclose()
    assert sleep.waits == [11.0, 6.0]
    assert server.faults_served() == {"rate_limit": 2}


async def test_rate_limits_are_retried_until_the_deadline_not_an_attempt_cap(
    server: LLMTestServer,
) -> None:
    stats, sleep = LLMStats(), FakeSleep()
    backend = build_backend(settings_for(server, max_attempts=5), stats=stats, sleep=sleep)
    server.plan(*[Fault.rate_limit(5)] * 8)  # over a minute of "slow down" from the provider
    response = await backend.complete(request())
    assert response.attempts == 9 and stats.retries == 8
    # Retry-After is the floor; the exponential backoff (0.25 s doubling) takes over above it.
    assert sleep.waits == [5.0, 5.0, 5.0, 5.0, 5.0, 8.0, 16.0, 30.0]

    server.plan(*[Fault.rate_limit(50)] * 10)  # the window outlasts the deadline
    sleep.waits.clear()
    with pytest.raises(BackendError) as info:
        await backend.complete(request())
    await backend.aclose()
    # 0 + 50 + 50 = 100 s waited; the next 50 s would end past 120 s, so it stops there.
    assert sleep.waits == [50.0, 50.0]
    assert "still rate limited" in info.value.message
    assert "llm.retry.rate_limit_deadline" in (info.value.remedy or "")
    assert "--resume" in (info.value.remedy or "")


async def test_other_failures_keep_the_attempt_cap_between_rate_limits(
    server: LLMTestServer,
) -> None:
    backend = build_backend(settings_for(server, max_attempts=3), sleep=FakeSleep())
    server.plan(*[Fault.rate_limit(1), Fault.server_error()] * 3)
    with pytest.raises(BackendError, match="after 6 attempts"):
        await backend.complete(request())
    await backend.aclose()
    assert server.count() == 6  # three 500s end it; the 429s did not count against the cap


async def test_deadline_is_configurable(server: LLMTestServer) -> None:
    sleep = FakeSleep()
    backend = build_backend(settings_for(server, rate_limit_deadline=10.0), sleep=sleep)
    server.plan(*[Fault.rate_limit(4)] * 5)
    with pytest.raises(BackendError, match="still rate limited"):
        await backend.complete(request())
    await backend.aclose()
    assert sleep.waits == [4.0, 4.0]  # 8 s waited; 8 + 4 > 10


async def test_custom_backend_errors_get_the_same_policy() -> None:
    sleep = FakeSleep()
    settings = RetrySettings(max_attempts=3, initial_wait=1.0, jitter=0.0)
    slow = ScriptedBackend([RetryableError.rate_limited("slow down", retry_after=2.0)] * 8 + ["ok"])
    retrying = RetryingBackend(slow, settings, sleep=sleep)
    assert (await retrying.complete(request())).text == "ok"
    assert sleep.waits == [2.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    down = ScriptedBackend([RetryableError("down")] * 5 + ["ok"])
    with pytest.raises(BackendError, match="after 3 attempts"):
        await RetryingBackend(down, settings, sleep=FakeSleep()).complete(request())

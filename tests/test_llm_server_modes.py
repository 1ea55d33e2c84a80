"""The fake server's real-world modes, seen through the real ``openai`` client.

A server that ignores ``response_format``, a LiteLLM proxy's headers and a seeded random mix of
429/500 faults: the tests of the backend stack rely on each behaving as described here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from llm_server import OFF_SCHEMA_TEXT, Fault, FaultMix, LLMTestServer
from openai import OpenAI

SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "output",
        "schema": {"type": "object", "properties": {"chosen": {"type": "string"}}},
        "strict": False,
    },
}


def schema_responder(_body: dict[str, object]) -> str:
    return json.dumps({"chosen": "i:1"})


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(responder=schema_responder) as srv:
        yield srv


def client_for(server: LLMTestServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="dummy", max_retries=0, timeout=5.0)


def ask(client: OpenAI, *, with_format: bool) -> str:
    extra = {"response_format": SCHEMA_FORMAT} if with_format else {}
    answer = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "pick one"}],
        **extra,  # type: ignore[arg-type]
    )
    return answer.choices[0].message.content or ""


def test_ignoring_server_accepts_response_format_and_answers_off_schema(
    server: LLMTestServer,
) -> None:
    client = client_for(server)
    assert json.loads(ask(client, with_format=True)) == {"chosen": "i:1"}
    server.set_ignores_response_format(True)
    assert ask(client, with_format=True) == OFF_SCHEMA_TEXT  # a 200, not the schema's JSON
    # Without response_format (the schema travels in the prompt) the model's answer comes back.
    assert json.loads(ask(client, with_format=False)) == {"chosen": "i:1"}
    server.set_ignores_response_format(True, answer='{"answer": "first"}')
    assert json.loads(ask(client, with_format=True)) == {"answer": "first"}


def test_litellm_mode_sends_provider_prefixed_wait_header(server: LLMTestServer) -> None:
    client = client_for(server)
    server.set_litellm_headers(True)
    server.plan(Fault.rate_limit(7))
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, with_format=False)
    headers = caught.value.response.headers
    assert headers["llm_provider-retry-after"] == "7"
    assert "retry-after" not in headers
    assert headers["x-litellm-version"]
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-litellm-model-id"]


def test_wait_header_of_one_rate_limit_can_be_chosen(server: LLMTestServer) -> None:
    client = client_for(server)
    server.plan(Fault.rate_limit(1500, header="retry-after-ms"))
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, with_format=False)
    assert caught.value.response.headers["retry-after-ms"] == "1500"


def outcomes(server: LLMTestServer, n: int) -> list[str]:
    client = client_for(server)
    seen = []
    for _ in range(n):
        try:
            ask(client, with_format=False)
            seen.append("ok")
        except openai.RateLimitError as exc:
            assert exc.response.headers["retry-after"] == "0.05"
            seen.append("429")
        except openai.InternalServerError:
            seen.append("500")
    return seen


def test_fault_mix_is_seeded_and_near_its_shares(server: LLMTestServer) -> None:
    mix = FaultMix(rate_limit=0.2, server_error=0.1, retry_after=0.05, seed=3)
    server.set_fault_mix(mix)
    first = outcomes(server, 200)
    server.set_fault_mix(mix)
    assert outcomes(server, 200) == first  # same seed, same sequence
    assert 20 <= first.count("429") <= 60 and 5 <= first.count("500") <= 35
    assert server.faults_served() == {
        "rate_limit": 2 * first.count("429"),
        "server_error": 2 * first.count("500"),
    }
    server.set_fault_mix(None)
    assert outcomes(server, 10) == ["ok"] * 10
    with pytest.raises(ValueError):
        FaultMix(rate_limit=0.7, server_error=0.5)

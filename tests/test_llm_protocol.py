"""Unit tests of the LLM layer's pure helpers: request keys, Retry-After, JSON extraction, keys."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from recnet.errors import BackendError
from recnet.llm.credentials import DUMMY_KEY, is_local_url, resolve_api_key
from recnet.llm.failures import (
    FatalProviderError,
    RetryableError,
    classify_status,
    parse_retry_after,
    redact,
)
from recnet.llm.protocol import LLMRequest, request_key
from recnet.llm.stats import LLMStats
from recnet.llm.structured import AnswerError, extract_json_object


def _request(**changes: object) -> LLMRequest:
    base = LLMRequest(
        model="m",
        messages=({"role": "user", "content": "hi"},),
        temperature=0.0,
        max_tokens=64,
        seed=1,
        response_schema={"type": "object"},
        schema_name="predict",
        pack_name="default",
        pack_version="1",
        pack_hash="abc",
        operation="predict",
        agent_id="u:1",
        step=3,
        phase="interact",
    )
    return dataclasses.replace(base, **changes)


def test_request_key_ignores_metadata() -> None:
    key = request_key(_request())
    assert len(key) == 64
    assert request_key(_request(agent_id="u:2", step=9, phase="evaluate", operation="x")) == key


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other"},
        {"messages": ({"role": "user", "content": "hello"},)},
        {"temperature": 0.5},
        {"max_tokens": 65},
        {"seed": 2},
        {"response_schema": {"type": "object", "required": ["x"]}},
        {"pack_hash": "abd"},
        {"pack_version": "2"},
    ],
)
def test_request_key_covers_answer_shaping_fields(change: dict[str, object]) -> None:
    assert request_key(_request(**change)) != request_key(_request())


def test_messages_list_is_frozen_into_tuple() -> None:
    request = LLMRequest(model="m", messages=[{"role": "user", "content": "x"}])  # type: ignore[arg-type]
    assert isinstance(request.messages, tuple)


def test_retry_after_seconds_date_and_ms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "Wed, 01 Jan 2025 12:00:30 GMT"}, now=now) == 30.0
    assert parse_retry_after({"retry-after": "Wed, 01 Jan 2025 11:00:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_status_classification() -> None:
    assert isinstance(classify_status(429, "x", retry_after=3.0), RetryableError)
    assert classify_status(429, "x", retry_after=3.0).retry_after == 3.0
    assert isinstance(classify_status(503, "x"), RetryableError)
    for status in (400, 401, 403, 404, 422):
        error = classify_status(status, "x")
        assert isinstance(error, FatalProviderError)
        assert error.status_code == status
        assert error.remedy


def test_redact() -> None:
    assert redact("key sk-abcdef used", "sk-abcdef") == "key *** used"
    assert redact("nothing", None) == "nothing"


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '```json\n{"a": 1}\n```',
        'Sure! Here is the answer:\n{"a": 1}\nHope it helps {not json}',
        'noise {broken then {"a": 1}',
        '```\n{"a": 1}\n```',
    ],
)
def test_extract_json_object(text: str) -> None:
    assert extract_json_object(text) == {"a": 1}


@pytest.mark.parametrize("text", ["", "   ", "no json here", "[1, 2]", '{"a": '])
def test_extract_json_object_failures(text: str) -> None:
    with pytest.raises(AnswerError) as info:
        extract_json_object(text)
    assert info.value.raw == text


def test_api_key_rule() -> None:
    assert resolve_api_key("K", None, {"K": "sk-1"}) == "sk-1"
    assert resolve_api_key("K", "http://127.0.0.1:8000/v1", {}) == DUMMY_KEY
    assert resolve_api_key("K", "http://localhost:11434/v1", {}) == DUMMY_KEY
    assert is_local_url("http://[::1]:8000/v1")
    assert not is_local_url("https://api.example.com/v1")
    with pytest.raises(BackendError) as info:
        resolve_api_key("MY_KEY_VAR", "https://api.example.com/v1", {})
    assert "MY_KEY_VAR" in str(info.value)
    assert info.value.remedy and "api_key_env" in info.value.remedy


def test_stats_table_lists_every_counter() -> None:
    stats = LLMStats(calls=3, retries=2, cost=0.5)
    table = stats.table()
    assert table.row_count == len(stats.as_dict())
    assert list(table.columns[0].cells) == list(stats.as_dict())
    assert "3" in list(table.columns[1].cells)

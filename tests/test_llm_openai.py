"""The backend stack through the real openai client against the local test server.

Every fault is injected by the server; the stats the stack reports must match what was injected
exactly. Waits are measured with a fake sleep, never with wall time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llm_server import Fault, LLMTestServer, fake_embedding
from sqlalchemy import create_engine, insert

from recnet.config.scenario import EmbedderSettings, LLMSettings
from recnet.errors import BackendError
from recnet.llm.embeddings import OpenAIEmbedder
from recnet.llm.factory import build_backend
from recnet.llm.pack import PromptPack, load_pack
from recnet.llm.schemas import PredictOutput
from recnet.llm.stats import LLMStats
from recnet.llm.structured import CallMeta, call_structured
from recnet.trace.schema import llm_calls, metadata

KEY_VAR = "RECNET_TEST_LLM_KEY"
SECRET = "sk-recnet-SECRET-7f3a9c1e5b"


def predict_responder(request_json: dict[str, Any]) -> str:
    """Chooses the first candidate id listed in the prompt ("<id>: ...")."""
    user = next(m["content"] for m in request_json["messages"] if m["role"] == "user")
    first = next(line for line in user.splitlines() if line.startswith("i:"))
    chosen = ":".join(first.split(":")[:2])
    return json.dumps({"chosen": chosen, "reasoning": "r"})


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(responder=predict_responder) as srv:
        yield srv


@pytest.fixture(scope="module")
def pack() -> PromptPack:
    return load_pack("default")


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, SECRET)


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def settings_for(server: LLMTestServer, **changes: Any) -> LLMSettings:
    data: dict[str, Any] = {
        "backend": "openai",
        "model": "test-model",
        "base_url": server.base_url,
        "api_key_env": KEY_VAR,
        "retry": {"initial_wait": 0.25, "jitter": 0.0, "timeout": 5.0, "max_attempts": 5},
        "cache": {"enabled": False},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return LLMSettings.model_validate(data)


def variables(user: str = "likes noir") -> dict[str, str]:
    return {
        "user_profile": user,
        "propagated_profile": "",
        "candidates": "i:1: Heat (1995), crime\ni:2: Toy Story (1995), animation",
    }


META = CallMeta(model="test-model", agent_id="u:1", step=0, phase="interact", run_id="run-1")


async def test_success(server: LLMTestServer, pack: PromptPack) -> None:
    stats = LLMStats()
    backend = build_backend(settings_for(server), stats=stats)
    result = await call_structured(
        backend, pack, "predict", variables(), PredictOutput, meta=META, stats=stats
    )
    await backend.aclose()
    assert result.ok and result.value is not None
    assert result.value.chosen == "i:1"
    assert server.count() == 1
    sent = server.requests[0].body
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "predict"
    assert sent["model"] == "test-model"
    assert stats.calls == 1 and stats.retries == 0 and stats.repairs == 0
    assert stats.tokens_in > 0 and stats.tokens_out > 0
    assert result.records[0]["attempts"] == 1 and result.records[0]["parsed_ok"] is True


async def test_transient_faults_are_retried_and_counted(
    server: LLMTestServer, pack: PromptPack
) -> None:
    stats, sleep = LLMStats(), FakeSleep()
    settings = settings_for(server, retry={"timeout": 0.3})
    backend = build_backend(settings, stats=stats, sleep=sleep)
    server.plan(Fault.rate_limit(retry_after=7), Fault.server_error(503), Fault.delay(1.5))
    result = await call_structured(
        backend, pack, "predict", variables(), PredictOutput, meta=META, stats=stats
    )
    await backend.aclose()
    assert result.ok
    assert stats.retries == 3
    assert stats.calls == 1
    assert stats.repairs == 0 and stats.fallbacks == 0
    assert server.count() == 4
    assert result.records[0]["attempts"] == 4
    # Retry-After: 7 is the minimum first wait; later waits follow the backoff (0.5, 1.0).
    assert len(sleep.waits) == 3
    assert sleep.waits[0] >= 7.0
    assert sleep.waits[1:] == [0.5, 1.0]


async def test_retry_after_below_backoff_keeps_backoff(
    server: LLMTestServer, pack: PromptPack
) -> None:
    sleep = FakeSleep()
    backend = build_backend(
        settings_for(server, retry={"initial_wait": 2.0}), stats=LLMStats(), sleep=sleep
    )
    server.plan(Fault.rate_limit(retry_after=1))
    result = await call_structured(backend, pack, "predict", variables(), meta=META)
    await backend.aclose()
    assert result.ok
    assert sleep.waits == [2.0]


async def test_retries_are_bounded(server: LLMTestServer, pack: PromptPack) -> None:
    stats = LLMStats()
    settings = settings_for(server, retry={"max_attempts": 3})
    backend = build_backend(settings, stats=stats, sleep=FakeSleep())
    server.plan(*[Fault.server_error()] * 3)
    records: list[dict[str, Any]] = []
    with pytest.raises(BackendError) as info:
        await call_structured(
            backend, pack, "predict", variables(), meta=META, on_record=records.append
        )
    await backend.aclose()
    assert "after 3 attempts" in str(info.value)
    assert "--resume" in (info.value.remedy or "")
    assert stats.retries == 2 and server.count() == 3 and stats.calls == 0
    assert len(records) == 1 and records[0]["error"] and records[0]["parsed_ok"] is False


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_errors_are_not_retried(
    server: LLMTestServer, pack: PromptPack, status: int
) -> None:
    stats = LLMStats()
    backend = build_backend(settings_for(server), stats=stats, sleep=FakeSleep())
    server.plan(Fault.http_status(status))
    with pytest.raises(BackendError) as info:
        await call_structured(backend, pack, "predict", variables(), meta=META, stats=stats)
    await backend.aclose()
    assert f"HTTP {status}" in str(info.value)
    assert server.count() == 1
    assert stats.retries == 0


async def test_body_that_is_not_a_completion_is_a_clear_error(
    server: LLMTestServer, pack: PromptPack
) -> None:
    stats = LLMStats()
    backend = build_backend(settings_for(server), stats=stats, sleep=FakeSleep())
    server.plan(Fault.not_completion())
    with pytest.raises(BackendError) as info:
        await call_structured(backend, pack, "predict", variables(), meta=META, stats=stats)
    await backend.aclose()
    assert "not a chat completion" in str(info.value)
    assert "llm.base_url" in (info.value.remedy or "")
    assert server.count() == 1 and stats.retries == 0


async def test_malformed_answer_is_repaired(server: LLMTestServer, pack: PromptPack) -> None:
    stats = LLMStats()
    backend = build_backend(settings_for(server), stats=stats)
    server.plan(Fault.malformed())
    result = await call_structured(
        backend, pack, "predict", variables(), meta=META, stats=stats, max_repairs=2
    )
    await backend.aclose()
    assert result.ok and result.repairs == 1
    assert stats.repairs == 1 and stats.fallbacks == 0 and stats.retries == 0
    assert server.count() == 2
    repair_messages = server.requests[1].body["messages"]
    assert repair_messages[-2] == {"role": "assistant", "content": "this is not JSON at all"}
    assert "could not be used" in repair_messages[-1]["content"]
    assert [r["parsed_ok"] for r in result.records] == [False, True]


async def test_persistent_garbage_falls_back(server: LLMTestServer, pack: PromptPack) -> None:
    stats = LLMStats()
    backend = build_backend(settings_for(server), stats=stats)
    server.plan(*[Fault.malformed()] * 3)
    result = await call_structured(
        backend, pack, "predict", variables(), meta=META, stats=stats, max_repairs=2
    )
    await backend.aclose()
    assert not result.ok and result.value is None
    assert stats.repairs == 2 and stats.fallbacks == 1
    assert server.count() == 3
    assert [r["fallback"] for r in result.records] == [False, False, True]


async def test_auto_mode_switches_to_json_in_text(server: LLMTestServer, pack: PromptPack) -> None:
    stats = LLMStats()
    server.set_supports_json_schema(False)
    backend = build_backend(settings_for(server, structured_output="auto"), stats=stats)
    first = await call_structured(backend, pack, "predict", variables(), meta=META, stats=stats)
    second = await call_structured(
        backend, pack, "predict", variables("likes cartoons"), meta=META, stats=stats
    )
    await backend.aclose()
    assert first.ok and second.ok
    assert stats.format_fallbacks == 1
    assert stats.retries == 0 and stats.repairs == 0
    assert server.count() == 3  # one rejected, then two in JSON-in-text mode
    bodies = [r.body for r in server.requests]
    assert "response_format" in bodies[0]
    for body in bodies[1:]:
        assert "response_format" not in body
        system = body["messages"][0]
        assert system["role"] == "system" and '"chosen"' in system["content"]
    assert first.records[0]["attempts"] == 2


async def test_json_schema_mode_reports_rejection(server: LLMTestServer, pack: PromptPack) -> None:
    server.set_supports_json_schema(False)
    backend = build_backend(settings_for(server, structured_output="json_schema"))
    with pytest.raises(BackendError) as info:
        await call_structured(backend, pack, "predict", variables(), meta=META)
    await backend.aclose()
    assert "structured_output" in (info.value.remedy or "")
    assert server.count() == 1


async def test_switches_to_max_completion_tokens_when_asked(
    server: LLMTestServer, pack: PromptPack
) -> None:
    stats = LLMStats()
    backend = build_backend(settings_for(server), stats=stats)
    server.plan(
        Fault.http_status(
            400,
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
        )
    )
    first = await call_structured(backend, pack, "predict", variables(), meta=META)
    second = await call_structured(backend, pack, "predict", variables("x"), meta=META)
    await backend.aclose()
    assert first.ok and second.ok and stats.retries == 0
    bodies = [r.body for r in server.requests]
    assert len(bodies) == 3
    assert "max_tokens" in bodies[0] and "max_completion_tokens" not in bodies[0]
    assert all(b["max_completion_tokens"] == 512 and "max_tokens" not in b for b in bodies[1:])


async def test_json_text_mode_never_sends_response_format(
    server: LLMTestServer, pack: PromptPack
) -> None:
    backend = build_backend(settings_for(server, structured_output="json_text"))
    result = await call_structured(backend, pack, "predict", variables(), meta=META)
    await backend.aclose()
    assert result.ok
    assert "response_format" not in server.requests[0].body


async def test_record_then_replay_without_server_requests(
    server: LLMTestServer, pack: PromptPack, tmp_path: Path
) -> None:
    cache = tmp_path / "llm-cache.sqlite"
    stats = LLMStats()
    recorder = build_backend(settings_for(server, cache={"enabled": True}), cache_path=cache)
    users = ["likes noir", "likes cartoons", "likes westerns"]
    recorded = [
        await call_structured(recorder, pack, "predict", variables(u), meta=META) for u in users
    ]
    await recorder.aclose()
    assert server.count() == 3
    replayer = build_backend(settings_for(server, backend="replay"), cache_path=cache, stats=stats)
    replayed = [
        await call_structured(replayer, pack, "predict", variables(u), meta=META, stats=stats)
        for u in users
    ]
    assert server.count() == 3  # zero new requests
    assert [r.raw for r in replayed] == [r.raw for r in recorded]
    assert [r.records[0]["request_key"] for r in replayed] == [
        r.records[0]["request_key"] for r in recorded
    ]
    assert stats.cache_hits == 3 and stats.calls == 0
    assert all(r.records[0]["cache_hit"] for r in replayed)
    with pytest.raises(BackendError) as info:
        await call_structured(replayer, pack, "predict", variables("likes musicals"), meta=META)
    await replayer.aclose()
    assert "replay cache miss for predict of u:1" in str(info.value)
    assert "recording does not contain this request" in str(info.value)
    assert info.value.remedy


async def test_no_api_key_in_cache_trace_or_logs(
    server: LLMTestServer, pack: PromptPack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    cache = tmp_path / "llm-cache.sqlite"
    trace = tmp_path / "run.sqlite"
    engine = create_engine(f"sqlite:///{trace}")
    metadata.create_all(engine)
    records: list[dict[str, Any]] = []
    server.set_supports_json_schema(False)  # exercise the fallback path and its log line too
    backend = build_backend(
        settings_for(server, cache={"enabled": True}), cache_path=cache, sleep=FakeSleep()
    )
    server.plan(Fault.rate_limit(1), Fault.malformed())
    await call_structured(
        backend, pack, "predict", variables(), meta=META, on_record=records.append
    )
    server.plan(Fault.http_status(401))
    with pytest.raises(BackendError) as info:
        await call_structured(
            backend, pack, "predict", variables("x"), meta=META, on_record=records.append
        )
    await backend.aclose()
    with engine.begin() as conn:
        conn.execute(insert(llm_calls), records)
    engine.dispose()
    # The key really was sent to the server...
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)
    # ...but appears in no file, record, error or log line.
    assert len(records) == 3
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert any(p.name == "llm-cache.sqlite" for p in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in json.dumps(records, default=str)
    assert SECRET not in str(info.value) and SECRET not in caplog.text


def test_openai_embedder(server: LLMTestServer) -> None:
    settings = EmbedderSettings(kind="openai", model="emb", base_url=server.base_url)
    embedder = OpenAIEmbedder(settings, batch_size=2, environ={})
    texts = ["noir", "comedy", "", "western", "space opera"]
    matrix = embedder.embed(texts)
    embedder.close()
    assert matrix.shape == (5, 16)
    assert server.count("/embeddings") == 3
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0)
    expected = np.asarray(fake_embedding("western", 16))
    np.testing.assert_allclose(matrix[3], expected / np.linalg.norm(expected))
    assert server.requests[0].body["encoding_format"] == "float"
    assert embedder.embed([]).shape == (0, 16)


def test_missing_key_for_remote_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR)
    settings = LLMSettings(
        backend="openai", base_url="https://llm.example.com/v1", api_key_env=KEY_VAR
    )
    with pytest.raises(BackendError) as info:
        build_backend(settings)
    assert KEY_VAR in str(info.value)

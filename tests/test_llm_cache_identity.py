"""The replay cache keys answers on who gave them (issue 11, item 1).

Two local servers (real ``openai`` client) answer the same request differently. Switching server,
backend or a custom backend's options must never replay the other source's answers; replaying
them is explicit (``llm.cache.replay_from``) and counted, so the run's metrics get marked.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import LLMTestServer

from recnet.config.scenario import LLMSettings
from recnet.errors import BackendError
from recnet.llm.cache import LEGACY_SOURCE, CachingBackend
from recnet.llm.factory import build_backend
from recnet.llm.protocol import LLMRequest, request_key
from recnet.llm.stats import LLMStats

KEY_VAR = "RECNET_TEST_LLM_KEY"


def answering(name: str) -> Any:
    return lambda _body: json.dumps({"from": name})


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LLMTestServer, LLMTestServer]]:
    monkeypatch.setenv(KEY_VAR, "sk-test")
    with LLMTestServer(answering("A")) as a, LLMTestServer(answering("B")) as b:
        yield a, b


def settings(server: LLMTestServer | None, path: Path, **changes: Any) -> LLMSettings:
    data: dict[str, Any] = {
        "backend": "openai",
        "model": "same-model",
        "base_url": server.base_url if server else None,
        "api_key_env": KEY_VAR,
        "retry": {"max_attempts": 1},
        "cache": {"enabled": True, "path": str(path), **changes.pop("cache", {})},
    }
    return LLMSettings.model_validate({**data, **changes})


REQUEST = LLMRequest(model="same-model", messages=({"role": "user", "content": "hi"},))


async def ask(llm: LLMSettings, stats: LLMStats | None = None) -> str:
    backend = build_backend(llm, stats=stats)
    try:
        return json.loads((await backend.complete(REQUEST)).text)["from"]
    finally:
        await backend.aclose()


async def test_switching_server_does_not_replay_the_other_servers_answers(
    servers: tuple[LLMTestServer, LLMTestServer], tmp_path: Path
) -> None:
    a, b = servers
    cache = tmp_path / "llm-cache.sqlite"
    assert await ask(settings(a, cache)) == "A"
    assert await ask(settings(a, cache)) == "A" and a.count() == 1  # a hit from its own source
    stats = LLMStats()
    assert await ask(settings(b, cache), stats) == "B"  # same model name, other server
    assert b.count() == 1 and stats.cache_hits == 0 and stats.flag() is None


async def test_a_namespace_shares_answers_between_servers_on_purpose(
    servers: tuple[LLMTestServer, LLMTestServer], tmp_path: Path
) -> None:
    a, b = servers
    cache = tmp_path / "llm-cache.sqlite"
    assert await ask(settings(a, cache, cache={"namespace": "lab-qwen"})) == "A"
    stats = LLMStats()
    assert await ask(settings(b, cache, cache={"namespace": "lab-qwen"}), stats) == "A"
    assert b.count() == 0 and stats.cache_hits == 1 and stats.foreign_replays == 0


async def test_replaying_another_source_is_explicit_and_marked(
    servers: tuple[LLMTestServer, LLMTestServer], tmp_path: Path
) -> None:
    a, b = servers
    cache = tmp_path / "llm-cache.sqlite"
    await ask(settings(a, cache))
    source_a = f"openai@{a.base_url}"
    stats = LLMStats()
    assert await ask(settings(b, cache, cache={"replay_from": source_a}), stats) == "A"
    assert b.count() == 0 and stats.foreign_replays == 1
    assert stats.flag() == f"replayed: 1 from {source_a}"
    assert stats.warnings() == [f"1 answers replayed from another source: '{source_a}'"]


async def test_replay_backend_refuses_a_recording_of_another_server(
    servers: tuple[LLMTestServer, LLMTestServer], tmp_path: Path
) -> None:
    a, b = servers
    cache = tmp_path / "llm-cache.sqlite"
    await ask(settings(a, cache))
    with pytest.raises(BackendError) as info:
        await ask(settings(b, cache, backend="replay"))
    assert f"'openai@{a.base_url}'" in info.value.message
    assert "llm.cache.replay_from" in (info.value.remedy or "")
    own = LLMStats()
    assert await ask(settings(a, cache, backend="replay"), own) == "A"
    assert own.foreign_replays == 0 and own.flag() is None
    marked = LLMStats()
    replay_a = settings(b, cache, backend="replay", cache={"replay_from": f"openai@{a.base_url}"})
    assert await ask(replay_a, marked) == "A"
    assert marked.foreign_replays == 1 and "replayed" in (marked.flag() or "")
    with pytest.raises(BackendError, match="holds no answers from it"):
        await ask(settings(b, cache, backend="replay", cache={"replay_from": "openai@elsewhere"}))
    assert a.count() == 1 and b.count() == 0


async def test_custom_backend_options_are_part_of_the_source(tmp_path: Path) -> None:
    cache = tmp_path / "llm-cache.sqlite"

    def scripted(answer: str) -> LLMSettings:
        return settings(None, cache, backend="scripted", options={"answers": [answer]})

    assert await ask(scripted('{"from": "first"}')) == "first"
    assert await ask(scripted('{"from": "second"}')) == "second"  # not the first one's answer


async def test_a_format_1_cache_is_kept_and_replayed_only_on_request(
    servers: tuple[LLMTestServer, LLMTestServer], tmp_path: Path
) -> None:
    a, _ = servers
    path = tmp_path / "old-cache.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE cache_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO cache_meta VALUES ('format', '1');"
        "CREATE TABLE llm_cache (key TEXT PRIMARY KEY, model TEXT NOT NULL, operation TEXT, "
        "agent_id TEXT, request_json TEXT NOT NULL, text TEXT NOT NULL, tokens_in INTEGER NOT "
        "NULL, tokens_out INTEGER NOT NULL, latency_ms REAL, created_at TEXT NOT NULL);"
    )
    db.execute(
        "INSERT INTO llm_cache VALUES (?, 'same-model', 'call', NULL, '{}', ?, 1, 1, 0, 'then')",
        (request_key(REQUEST), json.dumps({"from": "old"})),
    )
    db.commit()
    db.close()
    assert await ask(settings(a, path)) == "A"  # not silently the old, sourceless answer
    stats = LLMStats()
    assert await ask(settings(a, path, cache={"replay_from": LEGACY_SOURCE}), stats) == "A"
    assert stats.foreign_replays == 0  # its own answer, recorded just now, comes first
    old = CachingBackend(None, path, mode="replay", replay_from=LEGACY_SOURCE, stats=stats)
    assert json.loads((await old.complete(REQUEST)).text) == {"from": "old"}
    await old.aclose()


def test_a_fleet_is_one_source_whatever_the_order_of_its_urls() -> None:
    from recnet.llm.cache import source_of

    one = LLMSettings(backend="openai", base_url=["http://b:1/v1/", "http://a:1/v1"])
    other = LLMSettings(backend="openai", base_url=["http://a:1/v1", "http://b:1/v1"])
    assert source_of(one) == source_of(other) == "openai@http://a:1/v1,http://b:1/v1"
    assert source_of(LLMSettings(backend="openai", base_url="http://a:1/v1")) != source_of(one)

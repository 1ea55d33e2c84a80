"""Structured calls with a scripted backend: parsing, validation, repairs, fallback, records."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from recnet.errors import BudgetExceeded
from recnet.llm.pack import PromptPack, load_pack
from recnet.llm.protocol import LLMRequest, request_key
from recnet.llm.schemas import GradientOutput, PredictOutput, RankOutput
from recnet.llm.scripted import ScriptedBackend
from recnet.llm.stats import LLMStats
from recnet.llm.structured import CallMeta, call_structured, run_concurrently
from recnet.trace.schema import llm_calls

CANDIDATES = ["i:1", "i:2", "i:3"]
META = CallMeta(model="m", seed=7, agent_id="u:5", step=2, phase="evaluate", run_id="r")


@pytest.fixture(scope="module")
def pack() -> PromptPack:
    return load_pack("default")


def rank_vars() -> dict[str, Any]:
    return {
        "user_profile": "likes crime",
        "propagated_profile": "",
        "candidates": "\n".join(f"{c}: film {c}" for c in CANDIDATES),
        "n_candidates": len(CANDIDATES),
    }


def must_rank_all(value: RankOutput) -> None:
    if sorted(value.ranking) != sorted(CANDIDATES):
        raise ValueError(f"ranking must list each of {', '.join(CANDIDATES)} exactly once")


async def test_fenced_answer_with_prose_is_accepted(pack: PromptPack) -> None:
    answer = 'Here you go:\n```json\n{"ranking": ["i:2", "i:1", "i:3"], "reasoning": "r"}\n```'
    backend = ScriptedBackend([answer])
    result = await call_structured(
        backend, pack, "rank", rank_vars(), RankOutput, meta=META, validator=must_rank_all
    )
    assert result.ok and result.value is not None
    assert result.value.ranking == ["i:2", "i:1", "i:3"]
    assert result.calls == 1 and result.repairs == 0
    request = backend.requests[0]
    assert request.response_schema == RankOutput.model_json_schema()
    assert request.seed == 7 and request.pack_hash == pack.hash and request.agent_id == "u:5"


async def test_validator_failure_is_repaired(pack: PromptPack) -> None:
    stats = LLMStats()
    backend = ScriptedBackend(
        [
            '{"ranking": ["i:1", "i:9"]}',  # unknown candidate: the validator rejects it
            '{"ranking": ["i:3", "i:1", "i:2"], "reasoning": "fixed"}',
        ]
    )
    result = await call_structured(
        backend, pack, "rank", rank_vars(), meta=META, validator=must_rank_all, stats=stats
    )
    assert result.ok and result.repairs == 1 and stats.repairs == 1 and stats.fallbacks == 0
    assert isinstance(result.value, RankOutput)
    repair_request = backend.requests[1]
    assert repair_request.messages[-2] == {
        "role": "assistant",
        "content": '{"ranking": ["i:1", "i:9"]}',
    }
    assert "exactly once" in repair_request.messages[-1]["content"]
    assert request_key(repair_request) != request_key(backend.requests[0])


async def test_schema_violation_message_names_the_field(pack: PromptPack) -> None:
    backend = ScriptedBackend(
        [
            '{"judgements": [{"module": "r:1", "judgement": "great"}]}',
            '{"judgements": [{"module": "r:1", "judgement": "positive"}]}',
        ]
    )
    variables = {
        "user_profile": "u",
        "modules": "[r:1] noir fans",
        "candidates": "i:1",
        "predicted": "i:1",
        "true_item": "i:1",
    }
    result = await call_structured(backend, pack, "gradient", variables, GradientOutput, meta=META)
    assert result.ok and result.value is not None
    assert result.value.judgements[0].suggestion == "no adjustment"
    first_error = result.records[0]["error"]
    assert "judgements.0.judgement" in first_error


async def test_fallback_after_bounded_repairs(pack: PromptPack) -> None:
    stats = LLMStats()
    records: list[dict[str, Any]] = []
    backend = ScriptedBackend(["nope", "still nope", '{"wrong": 1}', "never asked"])
    result = await call_structured(
        backend,
        pack,
        "rank",
        rank_vars(),
        meta=META,
        max_repairs=2,
        on_record=records.append,
        stats=stats,
    )
    assert not result.ok and result.value is None
    assert result.raw == '{"wrong": 1}' and "ranking" in (result.error or "")
    assert backend.calls == 3
    assert stats.repairs == 2 and stats.fallbacks == 1
    assert records == result.records
    assert [r["repairs"] for r in records] == [0, 1, 2]
    assert [r["fallback"] for r in records] == [False, False, True]
    assert all(r["parsed_ok"] is False for r in records)


async def test_zero_repairs_means_one_call(pack: PromptPack) -> None:
    backend = ScriptedBackend(["garbage", "unused"])
    result = await call_structured(backend, pack, "rank", rank_vars(), meta=META, max_repairs=0)
    assert not result.ok and backend.calls == 1


async def test_records_match_trace_columns(pack: PromptPack) -> None:
    backend = ScriptedBackend(['{"chosen": "i:1", "reasoning": "r"}'])
    variables = {"user_profile": "u", "propagated_profile": "p", "candidates": "i:1: x"}
    result = await call_structured(backend, pack, "predict", variables, PredictOutput, meta=META)
    record = result.records[0]
    columns = {c.name for c in llm_calls.columns} - {"id"}
    assert set(record) == columns
    assert record["request_key"] == request_key(backend.requests[0])
    assert json.loads(record["messages_json"]) == [dict(m) for m in backend.requests[0].messages]
    assert record["raw_response"] == '{"chosen": "i:1", "reasoning": "r"}'
    assert (record["operation"], record["agent_id"], record["step"]) == ("predict", "u:5", 2)
    assert (record["pack_name"], record["pack_hash"]) == ("default", pack.hash)


async def test_backend_errors_propagate_after_recording(pack: PromptPack) -> None:
    records: list[dict[str, Any]] = []
    backend = ScriptedBackend([BudgetExceeded("LLM budget reached", "raise it")])
    with pytest.raises(BudgetExceeded):
        await call_structured(
            backend, pack, "rank", rank_vars(), meta=META, on_record=records.append
        )
    assert len(records) == 1 and "budget" in records[0]["error"]
    assert records[0]["raw_response"] is None and records[0]["attempts"] == 0


async def test_run_concurrently_bounds_and_keeps_order() -> None:
    running = peak = 0

    async def job(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (5 - i % 5))
        running -= 1
        return i * i

    results = await run_concurrently((job(i) for i in range(20)), limit=4)
    assert results == [i * i for i in range(20)]
    assert peak == 4


async def test_run_concurrently_cancels_rest_on_error() -> None:
    finished: list[int] = []

    async def job(i: int) -> int:
        if i == 1:
            raise BudgetExceeded("stop", "resume")
        await asyncio.sleep(0.01)
        finished.append(i)
        return i

    with pytest.raises(BudgetExceeded):
        await run_concurrently([job(i) for i in range(10)], limit=2)
    await asyncio.sleep(0.05)
    assert finished == []  # the running call was cancelled, the rest never started


async def test_scripted_backend_from_callable_sees_requests(pack: PromptPack) -> None:
    seen: list[LLMRequest] = []

    def responder(request: LLMRequest) -> str:
        seen.append(request)
        return json.dumps({"chosen": "i:1"})

    variables = {"user_profile": "u", "propagated_profile": "", "candidates": "i:1: x"}
    result = await call_structured(
        ScriptedBackend(responder), pack, "predict", variables, meta=META
    )
    assert result.ok and len(seen) == 1 and seen[0].operation == "predict"

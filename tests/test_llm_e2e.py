"""End to end: `simulate` with the LLM brain through the real `openai` client and a local server.

The server (``llm_server.LLMTestServer`` on 127.0.0.1) answers with ``llm_responder.FakeLLM``;
faults are injected on the wire (429 with Retry-After, 500, a timeout, malformed JSON) and in
answers (a non-candidate item, a ranking that is not a permutation). The run must complete and
the reported counts must equal what was injected. Then record → replay gives the same run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_responder import FakeLLM
from llm_server import Fault, LLMTestServer

from recnet.config.scenario import Scenario
from recnet.errors import BackendError
from recnet.runner import RunResult, simulate

MAX_REPAIRS = 2
RETRY_AFTER = 0.2
TIMEOUT = 1.0
RETRY = {
    "max_attempts": 5,
    "initial_wait": 0.0,
    "max_wait": 0.05,
    "jitter": 0.0,
    "timeout": TIMEOUT,
}


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer() as running:
        yield running


def llm_block(server: LLMTestServer, **overrides: Any) -> dict[str, Any]:
    return {
        "backend": "openai",
        "base_url": server.base_url,
        "api_key_env": "RECNET_TEST_UNSET_KEY",  # local server: a dummy key, never a real one
        "model": "test-model",
        "max_concurrency": 8,
        "max_repairs": MAX_REPAIRS,
        "retry": RETRY,
        "cache": {"enabled": False},
        **overrides,
    }


def synthetic(server: LLMTestServer, **llm: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "llm-synthetic",
            "seed": 3,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {
                    "n_users": 12,
                    "n_items": 24,
                    "n_communities": 3,
                    "interactions_per_user": 6,
                    "n_drifts": 0,
                },
            },
            "world": {"n_routers": 4},
            "propagation": {"update_size": 8, "max_recipients": 8},
            "evaluation": {"n_negatives": 5},
            "llm": llm_block(server, **llm),
        }
    )


def movielens(server: LLMTestServer, zip_path: Path) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "llm-movielens",
            "seed": 0,
            "dataset": {
                "kind": "movielens",
                "path": str(zip_path),
                "max_users": 5,
                "max_interactions_per_user": 5,
            },
            "world": {"n_routers": 4},
            "propagation": {"update_size": 5, "max_recipients": 8},
            "evaluation": {"n_negatives": 5},
            "llm": llm_block(server),
        }
    )


def rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


INJECTED_ON_THE_WIRE = (
    Fault.rate_limit(retry_after=RETRY_AFTER),
    Fault.server_error(),
    Fault.delay(TIMEOUT + 0.5),  # the client gives up after TIMEOUT: a timeout
    Fault.malformed(),
)


async def run_with_faults(
    server: LLMTestServer, scenario: Scenario, trace: Path, skip_predicts: int
) -> tuple[RunResult, FakeLLM]:
    """Inject every kind of fault once or more; return the result and the responder."""
    fake = FakeLLM(
        bad_predicts=2,
        stubborn_predicts=1,
        bad_ranks=1,
        stubborn_ranks=1,
        skip_predicts=skip_predicts,  # after the wire faults are used up: no fault meets another
    )
    server.set_responder(fake)
    server.plan(*INJECTED_ON_THE_WIRE)
    result = await simulate(scenario, trace_path=trace)
    return result, fake


def check_counts(result: RunResult, fake: FakeLLM, server: LLMTestServer, trace: Path) -> None:
    assert server.pending_faults == 0
    assert fake.injected == {
        "bad_predict": 2,
        "stubborn_predict": 1,
        "bad_rank": 1,
        "stubborn_rank": 1,
    }
    stats = result.llm_stats
    assert stats is not None
    # 429, 500 and the timeout: one retry each
    assert stats.retries == 3
    # malformed JSON and every bad answer: one re-ask each; a stubborn one: all MAX_REPAIRS
    assert stats.repairs == 1 + 2 + 1 + 2 * MAX_REPAIRS
    assert stats.fallbacks == 2
    calls = rows(
        trace,
        "SELECT count(*), sum(NOT parsed_ok), sum(fallback), sum(attempts), "
        "count(DISTINCT pack_hash), sum(run_id IS NULL) FROM llm_calls",
    )[0]
    n_calls, n_failed, n_fallbacks, n_attempts, n_packs, no_run = calls
    assert n_calls == stats.calls  # no cache: one structured attempt = one answered request
    assert n_failed == stats.repairs + stats.fallbacks
    assert n_fallbacks == stats.fallbacks
    assert n_attempts == n_calls + stats.retries
    assert server.count() == n_attempts  # every network attempt reached the server
    assert n_packs == 1 and no_run == 0
    fallbacks = rows(trace, "SELECT operation, phase FROM llm_calls WHERE fallback ORDER BY id")
    assert sorted(fallbacks) == [("predict", "interact"), ("rank", "evaluate")]
    assert result.operations["rank"] == result.n_test_users + 1 + MAX_REPAIRS
    # the run finished: every training interaction and every test user is in the trace
    assert rows(trace, "SELECT count(*) FROM interactions")[0][0] == result.n_train
    ranked = rows(trace, "SELECT count(*) FROM predictions WHERE model = 'recnet'")[0][0]
    assert ranked == result.n_test_users
    assert rows(trace, "SELECT status FROM runs")[0][0] == "finished"


async def test_synthetic_run_with_faults_reports_what_was_injected(
    server: LLMTestServer, tmp_path: Path
) -> None:
    trace = tmp_path / "synthetic.sqlite"
    scenario = synthetic(server)
    scenario.evaluation.prequential.every = 0  # the rank faults are meant for the final ranking
    result, fake = await run_with_faults(server, scenario, trace, skip_predicts=8)
    check_counts(result, fake, server, trace)
    assert set(result.metrics) >= {"recnet", "popularity"}
    phases = rows(trace, "SELECT DISTINCT phase FROM llm_calls ORDER BY phase")
    assert [p for (p,) in phases] == ["evaluate", "integrate", "interact", "receive"]
    # the rate-limited request was sent again, unchanged
    seen = [r for r in server.requests if r.fault == "rate_limit"]
    assert len(seen) == 1
    retried = [r for r in server.requests if r.body == seen[0].body]
    assert len(retried) >= 2


async def test_movielens_subsample_with_faults_reports_what_was_injected(
    server: LLMTestServer, tmp_path: Path, ml_small_zip: Path
) -> None:
    trace = tmp_path / "movielens.sqlite"
    scenario = movielens(server, ml_small_zip)
    scenario.evaluation.prequential.every = 0  # the rank faults are meant for the final ranking
    # 15 training interactions = 15 predicts: the answer faults come late (predicts 11-13), well
    # after the wire faults, so that under load no answer fault meets a wire fault.
    result, fake = await run_with_faults(server, scenario, trace, skip_predicts=10)
    check_counts(result, fake, server, trace)
    # 9,742 movies, but only items that act (or receive messages) ever cost a call: their own,
    # or a share of a fused reflection (agent_id = the user) or a batched merge
    agents = rows(trace, "SELECT count(DISTINCT agent_id) FROM llm_calls WHERE agent_id LIKE 'i:%'")
    assert agents[0][0] < 200
    revised = rows(
        trace,
        "SELECT count(DISTINCT agent_id) FROM profile_versions "
        "WHERE agent_id LIKE 'i:%' AND kind = 'original' AND text LIKE '%|%'",
    )
    assert 0 < revised[0][0] < 200


TRACE_TABLES = {
    "interactions": "SELECT seq, step, user_id, item_id, negative_id, chosen_id, correct "
    "FROM interactions ORDER BY seq",
    "predictions": "SELECT step, split, model, user_id, ranking_json, scores_json, rank, reasoning "
    "FROM predictions ORDER BY model, user_id",
    "profiles": "SELECT agent_id, step, kind, text, attributes_json FROM profile_versions "
    "ORDER BY agent_id, step, kind",
    "routers": "SELECT router_id, step, version, text, attributes_json FROM router_versions "
    "ORDER BY router_id, version",
    "messages": "SELECT step, router_id, client_id, score, status, rule_id FROM messages "
    "ORDER BY step, router_id, client_id, status",
    "prequential": "SELECT seq, step, user_id, item_id, rank, candidates_json FROM prequential "
    "ORDER BY seq",
    "llm_calls": "SELECT id, step, phase, operation, agent_id, pack_hash, request_key, "
    "raw_response, parsed_ok, repairs, fallback, error, tokens_in, tokens_out FROM llm_calls "
    "ORDER BY id",
}


def trace_contents(path: Path) -> dict[str, list[tuple]]:
    return {name: rows(path, sql) for name, sql in TRACE_TABLES.items()}


async def test_record_then_replay_gives_the_same_run(server: LLMTestServer, tmp_path: Path) -> None:
    cache = tmp_path / "llm-cache.sqlite"
    fake = FakeLLM(bad_predicts=1, bad_ranks=1, skip_predicts=8)
    server.set_responder(fake)
    server.plan(Fault.malformed())
    recorded_scenario = synthetic(server, cache={"enabled": True, "path": str(cache)})
    recorded = await simulate(recorded_scenario, trace_path=tmp_path / "recorded.sqlite")
    assert recorded.llm_stats is not None and recorded.llm_stats.repairs == 3
    n_requests = server.count()
    assert n_requests == recorded.llm_stats.calls > 0

    replay_scenario = synthetic(server, backend="replay", cache={"path": str(cache)})
    replayed = await simulate(replay_scenario, trace_path=tmp_path / "replayed.sqlite")
    assert server.count() == n_requests  # the replay never touched the server
    stats = replayed.llm_stats
    assert stats is not None and stats.calls == 0
    assert stats.cache_hits == sum(replayed.operations.values())
    assert (stats.repairs, stats.fallbacks) == (3, 0)
    assert replayed.metrics == recorded.metrics
    assert replayed.operations == recorded.operations
    first = trace_contents(tmp_path / "recorded.sqlite")
    second = trace_contents(tmp_path / "replayed.sqlite")
    for table in TRACE_TABLES:
        assert first[table], table
        assert second[table] == first[table], table

    # anything that changes a request misses the recording, with a clear error
    changed = synthetic(server, backend="replay", temperature=0.5, cache={"path": str(cache)})
    with pytest.raises(BackendError) as info:
        await simulate(changed, trace_path=tmp_path / "miss.sqlite")
    # the run's first call is the prequential rank of the first interaction, before its predict
    assert "replay cache miss for rank" in info.value.message
    assert "same scenario, seed, model, parameters and prompt pack" in (info.value.remedy or "")
    assert server.count() == n_requests
    assert rows(tmp_path / "miss.sqlite", "SELECT status FROM runs")[0][0] == "failed"

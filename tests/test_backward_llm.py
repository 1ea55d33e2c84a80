"""The backward phase with the LLM brain: gradient and optimize through the prompt pack.

Unit tests check how answers become edits (rule text → executable rule, profile text → weights,
bounded τ, validators that re-ask). The hand-built world runs with a scripted LLM; a whole
synthetic run goes through the real ``openai`` client against the local test server.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from llm_responder import FakeLLM
from llm_server import LLMTestServer
from test_backward_phase import RUN, hand_scenario, hand_world

from recnet.brain.base import MergeTask
from recnet.brain.credit import ModuleJudgement
from recnet.brain.llm import LLMBrain
from recnet.brain.llm_backward import (
    OptimizeRequest,
    _fits,
    _judges_each,
    assign_texts,
    filter_rewrite_from,
    judgements_from,
    router_decision_from,
    weights_following_text,
)
from recnet.brain.optimizer import OptimizerSettings, RouterState, apply_rule_edits
from recnet.config.scenario import Scenario
from recnet.context import RunContext
from recnet.data.types import Interaction
from recnet.llm.protocol import LLMRequest
from recnet.llm.schemas import GradientOutput, OptimizeOutput
from recnet.llm.scripted import ScriptedBackend
from recnet.phases.backward import BackwardPhase
from recnet.phases.forward import ForwardPhase, StepState
from recnet.rng import SeedTree
from recnet.runner import simulate
from recnet.trace.memory_store import MemoryTraceStore
from recnet.world.buffer import RouterMessage
from recnet.world.rules import FilterMemory, default_rules, describe, parse_rule

# -- answers → edits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("recency", {"max_age": 3.0}),
        ("min_relevance", {"threshold": 0.45}),
        ("conflict", {"threshold": 0.3}),
        ("max_share", {"share": 0.25}),
    ],
)
def test_canonical_rule_texts_parse_back_to_their_executable_form(
    kind: str, params: dict[str, float]
) -> None:
    assert parse_rule(describe(kind, params)) == (kind, params)  # type: ignore[arg-type]


def test_a_rule_in_other_words_is_a_text_rule() -> None:
    assert parse_rule("Ignore updates that only talk about horror films.") == ("text", {})


def memory() -> FilterMemory:
    return FilterMemory(default_rules(Scenario().world.filters), max_rules=5)


def test_a_modified_rule_keeps_or_loses_its_executable_form_with_its_wording() -> None:
    old = memory()
    exact = OptimizeOutput(
        operation="modify",
        target="[rule-min_relevance]",
        content=describe("min_relevance", {"threshold": 0.4}),
    )
    rewrite = filter_rewrite_from(exact, old, "u:1")
    assert rewrite is not None
    new = apply_rule_edits(old, rewrite.edits, "u:1")
    assert new.rule("min_relevance").params == {"threshold": 0.4}  # type: ignore[union-attr]
    assert new.rule("min_relevance").version == 2  # type: ignore[union-attr]
    free = OptimizeOutput(operation="modify", target="rule-min_relevance", content="No horror.")
    rewrite = filter_rewrite_from(free, old, "u:1")
    assert rewrite is not None
    new = apply_rule_edits(old, rewrite.edits, "u:1")
    changed = next(r for r in new.rules if r.rule_id == "rule-min_relevance")
    assert changed.kind == "text" and changed.params == {} and changed.text == "No horror."
    assert changed.executable() is None and new.rule("min_relevance") is None
    assert old.rule("min_relevance").params == {"threshold": 0.05}  # type: ignore[union-attr]


def test_add_and_reorder_answers_become_rule_edits() -> None:
    old = memory()
    added = filter_rewrite_from(
        OptimizeOutput(operation="add", content="Drop updates older than 2 steps."), old, "u:1"
    )
    assert added is not None
    new = apply_rule_edits(old, added.edits, "u:1")
    assert [r.rule_id for r in new.rules][-1] == "rule-recency-2"
    assert new.rules[-1].executable() == {"kind": "recency", "max_age": 2.0}
    order = [r.rule_id for r in reversed(old.rules)]
    reordered = filter_rewrite_from(OptimizeOutput(operation="reorder", order=order), old, "u:1")
    assert reordered is not None
    assert [r.rule_id for r in apply_rule_edits(old, reordered.edits, "u:1").rules] == order


def test_a_rewritten_profile_dampens_what_its_text_dropped() -> None:
    weights = {"genre:horror": 0.8, "genre:drama": 0.6, "mood:bleak": -0.4}
    out, dampened = weights_following_text(weights, "Fans of slow DRAMA films.", 0.5)
    assert out == {"genre:horror": 0.4, "genre:drama": 0.6, "mood:bleak": -0.4}
    assert dampened == ["genre:horror"]


def router_state(tau: float = 0.3) -> RouterState:
    return RouterState("r:2", {"genre:horror": 0.8, "genre:drama": 0.6}, tau, 12, 0.7)


def test_router_answers_are_bounded_and_typed() -> None:
    settings = OptimizerSettings(tau_step=0.02, tau_bounds=(0.25, 0.45))
    up = router_decision_from(OptimizeOutput(operation="tau", tau=0.9), router_state(), settings)
    assert up is not None and up.op == "tau" and up.tau == pytest.approx(0.32)
    edge = router_decision_from(
        OptimizeOutput(operation="tau", tau=0.0), router_state(0.26), settings
    )
    assert edge is not None and edge.tau == pytest.approx(0.25)
    rewrite = router_decision_from(
        OptimizeOutput(operation="rewrite", content="Drama lovers.", tau=0.31),
        router_state(),
        settings,
    )
    assert rewrite is not None and rewrite.op == "rewrite_tau" and rewrite.text == "Drama lovers."
    assert rewrite.dampened == ("genre:horror",) and rewrite.tau == pytest.approx(0.31)
    assert rewrite.profile is not None and rewrite.profile["genre:drama"] > 0.6
    merge = router_decision_from(
        OptimizeOutput(operation="merge", target="[R:4]"), router_state(), settings, ["r:4"]
    )
    assert merge is not None and merge.partner == "r:4"
    split = router_decision_from(
        OptimizeOutput(operation="split", parts=["Horror fans", " ", "Drama fans"]),
        router_state(),
        settings,
    )
    assert split is not None and split.parts == ("Horror fans", "Drama fans")


def test_split_texts_go_to_the_router_they_describe() -> None:
    profiles = [{"genre:drama": 1.0}, {"genre:horror": 1.0, "tag:gore": 0.5}]
    assert assign_texts(profiles, ["Gore and horror", "Quiet drama"]) == [
        "Quiet drama",
        "Gore and horror",
    ]


def test_the_gradient_validator_wants_every_module_once() -> None:
    check = _judges_each(["propagated_profile", "filter_memory", "r:3"])
    good = GradientOutput.model_validate(
        {
            "judgements": [
                {"module": "[propagated_profile]", "judgement": "negative"},
                {"module": "filter_memory", "judgement": "neutral"},
                {"module": "R:3", "judgement": "positive", "suggestion": "keep"},
            ]
        }
    )
    check(good)
    judged = judgements_from(good, ["propagated_profile", "filter_memory", "r:3"], "u:1")
    assert [(j.module, j.target_id, j.judgement) for j in judged] == [
        ("propagated_profile", "u:1", "negative"),
        ("filter_memory", "u:1", "neutral"),
        ("router", "r:3", "positive"),
    ]
    assert all(j.effect is None and j.client_id == "u:1" for j in judged)
    bad = GradientOutput.model_validate(
        {
            "judgements": [
                {"module": "propagated_profile", "judgement": "negative"},
                {"module": "propagated_profile", "judgement": "neutral"},
                {"module": "r:9", "judgement": "neutral"},
            ]
        }
    )
    with pytest.raises(ValueError) as info:
        check(bad)
    message = str(info.value)
    assert "unknown: r:9" in message and "twice: propagated_profile" in message
    assert "missing: filter_memory, r:3" in message


def test_the_optimize_validator_names_what_is_wrong() -> None:
    judgement = ModuleJudgement("filter_memory", "u:1", "negative", "r", "s")
    request = OptimizeRequest(
        "filter_memory",
        "u:1",
        "rules",
        [judgement],
        ("modify", "delete", "reorder", "none"),
        0,
        rule_ids=("rule-a", "rule-b"),
    )
    check = _fits(request)
    check(OptimizeOutput(operation="delete", target="rule-b"))
    cases = [
        (OptimizeOutput(operation="split", parts=["a", "b"]), "not allowed here"),
        (OptimizeOutput(operation="modify", target="rule-a"), "needs the new text"),
        (OptimizeOutput(operation="delete", target="rule-z"), "rule ids rule-a, rule-b"),
        (OptimizeOutput(operation="reorder", order=["rule-a"]), "every rule id exactly once"),
    ]
    for answer, expected in cases:
        with pytest.raises(ValueError, match=expected):
            check(answer)


# -- the hand-built world, scripted LLM -----------------------------------------------------------


def scripted(request: LLMRequest) -> str:
    """Ranks the horror film first; blames r:0; the optimizer narrows r:0 to drama."""
    prompt = request.messages[-1]["content"]
    if request.operation == "rank":
        return json.dumps({"ranking": ["i:w", "i:t"]})
    if request.operation == "gradient":
        return json.dumps(
            {
                "judgements": [
                    {"module": "propagated_profile", "judgement": "neutral"},
                    {"module": "filter_memory", "judgement": "neutral"},
                    {
                        "module": "r:0",
                        "judgement": "negative",
                        "reason": "its horror message pushed i:w above i:t",
                        "suggestion": "stop promoting horror",
                    },
                ]
            }
        )
    if request.operation == "optimize":
        assert "stop promoting horror" in prompt and '"split"' not in prompt
        return json.dumps(
            {"operation": "rewrite", "content": "Fans of gore.", "tau": 0.9, "reason": "narrow"}
        )
    raise AssertionError(f"unexpected {request.operation} call")


def test_a_router_blamed_by_the_llm_is_rewritten_with_its_text_and_a_bounded_tau() -> None:
    scenario = hand_scenario()
    backend = ScriptedBackend(scripted)
    records: list[dict[str, Any]] = []

    async def go():
        world = hand_world(scenario, {"genre:drama": 1.0}, {"genre:horror": 1.0})
        store = MemoryTraceStore()
        store.create_run(
            {
                "run_id": RUN,
                "name": "hand-llm",
                "seed": 0,
                "scenario_json": "{}",
                "versions_json": "{}",
                "brain": "llm",
                "status": "running",
                "started_at": "t0",
                "last_completed_step": -1,
            }
        )
        brain = LLMBrain(scenario, backend, on_record=records.append, run_id=RUN)
        ctx = RunContext(scenario, brain, store, RUN, SeedTree(0))
        forward = ForwardPhase(ctx, world)
        phase = BackwardPhase(ctx, world, forward, {"1": ["v", "x"]}, {"1": "v"})
        user = world.users["u:1"]
        message = RouterMessage(
            world.new_message_id(), "r:0", "u:1", 0, 0.3, dict(world.routers["r:0"].profile), ""
        )
        # reception as the forward phase would do it, through the offline merge (no LLM call)
        [outcome] = await phase.merge([MergeTask(user, [message], 0)])
        user.propagated = outcome.propagated.weights  # type: ignore[union-attr]
        phase.log.observe("u:1", [message], outcome.decisions)
        forward.seq = 1
        tau0 = world.routers["r:0"].tau
        stats = await phase.run(StepState(0, [Interaction("1", "t", 100)], started_at="t0"))
        store.flush()
        return ctx, world, stats, tau0

    ctx, world, stats, tau0 = asyncio.run(go())
    assert [r["operation"] for r in records] == ["rank", "gradient", "optimize"]
    assert all(r["phase"] in ("backward", "evaluate") for r in records)
    gradients = ctx.store.read("gradients", RUN)
    assert {(g["module"], g["judgement"]) for g in gradients} == {
        ("propagated_profile", "neutral"),
        ("filter_memory", "neutral"),
        ("router", "negative"),
    }
    assert all(g["effect"] is None for g in gradients)
    r0 = world.routers["r:0"]
    assert r0.text == "Fans of gore." and r0.version == 2
    assert r0.tau == pytest.approx(tau0 + scenario.backward.tau_step)  # asked 0.9, one step
    assert r0.profile["genre:horror"] < r0.profile["tag:gore"]  # horror was not mentioned
    [operation] = ctx.store.read("router_operations", RUN)
    assert operation["operation"] == "rewrite_tau" and operation["status"] == "kept"
    blamed = next(g for g in gradients if g["module"] == "router")
    assert operation["gradient_id"] == blamed["gradient_id"]
    assert stats.calls == 2  # the backward budget counts operations
    assert ctx.brain.operations.counts == {"rank": 1, "gradient": 1, "optimize": 1}


# -- a whole synthetic run through the local OpenAI-compatible server -----------------------------


def llm_backward_scenario(server: LLMTestServer, tmp_path: Path, **backward: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "llm-backward",
            "seed": 5,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {
                    "n_users": 16,
                    "n_items": 32,
                    "n_communities": 2,
                    "interactions_per_user": 6,
                    "n_drifts": 0,
                },
            },
            "world": {"n_routers": 4, "min_routers": 2, "max_routers": 8},
            "propagation": {"update_size": 16, "max_recipients": 8},
            "evaluation": {"n_negatives": 5},
            "backward": {
                "enabled": True,
                "every": 1,
                "select": "errors",
                "feedback": "step",
                "epsilon": 1.0,  # keep every optimisation: this test follows the LLM's edits
                "max_router_ops": 2,
                **backward,
            },
            "llm": {
                "backend": "openai",
                "base_url": server.base_url,
                "api_key_env": "RECNET_TEST_UNSET_KEY",
                "model": "test-model",
                "max_concurrency": 8,
                "max_repairs": 2,
                "retry": {"max_attempts": 3, "initial_wait": 0.0, "jitter": 0.0},
                "cache": {"enabled": False},
            },
            "trace": {"path": str(tmp_path / "run.sqlite")},
        }
    )


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_the_llm_backward_phase_runs_through_the_openai_client(tmp_path: Path) -> None:
    fake = FakeLLM(bad_gradients=2)
    with LLMTestServer(fake) as server:
        scenario = llm_backward_scenario(server, tmp_path)
        result = asyncio.run(simulate(scenario))
    trace = result.trace_path
    assert fake.injected["bad_gradient"] == 2
    calls = dict(
        query(
            trace, "SELECT operation, count(*) FROM llm_calls WHERE phase = 'backward' GROUP BY 1"
        )
    )
    gradient_rows = query(trace, "SELECT count(DISTINCT seq), count(*) FROM gradients")[0]
    n_repaired = query(
        trace, "SELECT count(*) FROM llm_calls WHERE operation = 'gradient' AND NOT parsed_ok"
    )[0][0]
    assert n_repaired == 2  # each bad answer was re-asked once, then answered well
    assert calls["gradient"] == gradient_rows[0] + n_repaired  # one call per judged prediction
    assert gradient_rows[1] > gradient_rows[0]  # several modules judged per prediction
    assert query(trace, "SELECT count(*) FROM gradients WHERE effect IS NOT NULL")[0][0] == 0
    judged = dict(query(trace, "SELECT judgement, count(*) FROM gradients GROUP BY 1"))
    assert judged.get("negative", 0) > 0 and judged.get("positive", 0) == 0  # errors only
    assert query(trace, "SELECT count(*) FROM gradients WHERE reward > 0")[0][0] == 0

    optimizations = query(trace, "SELECT module, operation, status FROM optimizations")
    assert {status for _, _, status in optimizations} == {"kept"}
    modules = {module for module, _, _ in optimizations}
    assert modules == {"propagated_profile", "filter_memory", "router"}
    assert calls["optimize"] >= len(
        [o for o in optimizations if o[0] != "router" or o[1] != "merge"]
    )
    # the LLM's rule text stayed executable: thresholds raised by 0.05 from the default 0.05
    rules = query(
        trace,
        "SELECT executable_json, gradient_id FROM filter_rule_versions WHERE reason = 'optimize'",
    )
    assert rules and all(g is not None for _, g in rules)
    thresholds = [json.loads(e)["threshold"] for e, _ in rules if e and "threshold" in e]
    assert thresholds and all(t == pytest.approx(0.1) or t > 0.1 for t in thresholds)
    # routers: LLM rewrites carry their text; splits made new routers with the LLM's parts
    operations = {op for (op,) in query(trace, "SELECT operation FROM router_operations")}
    assert {"rewrite_tau", "split"} <= operations
    split_texts = query(trace, "SELECT text FROM router_versions WHERE reason = 'split'")
    assert split_texts and all(t.startswith("Community: ") for (t,) in split_texts)
    rewritten = query(
        trace,
        "SELECT v.text, o.after_json FROM router_operations o JOIN router_versions v "
        "ON v.router_id = json_extract(o.result_ids_json, '$[0]') AND v.reason = 'optimize' "
        "WHERE o.operation = 'rewrite_tau'",
    )
    assert rewritten and all(t.startswith("Community: ") for t, _ in rewritten)
    versions = query(
        trace, "SELECT reason, gradient_id FROM router_versions WHERE reason != 'init'"
    )
    gradient_ids = {g for (g,) in query(trace, "SELECT gradient_id FROM gradients")}
    assert versions and all(g is None or g in gradient_ids for _, g in versions)
    summaries = query(trace, "SELECT sum(calls), sum(n_gradients) FROM backward_steps")[0]
    assert summaries[1] == gradient_rows[1]
    assert query(trace, "SELECT status FROM runs")[0][0] == "finished"


def test_the_backward_budget_caps_llm_calls(tmp_path: Path) -> None:
    with LLMTestServer(FakeLLM()) as server:
        scenario = llm_backward_scenario(server, tmp_path, max_calls=3)
        result = asyncio.run(simulate(scenario))
    trace = result.trace_path
    n_calls = query(
        trace,
        "SELECT count(*) FROM llm_calls WHERE operation IN ('gradient', 'optimize') AND parsed_ok",
    )[0][0]
    assert n_calls == 3
    skipped = query(trace, "SELECT count(*) FROM backward_steps WHERE skipped = 'budget'")[0][0]
    assert skipped >= 1


BACKWARD_TABLES = {
    "gradients": "SELECT gradient_id, step, seq, user_id, module, target_id, judgement, reason, "
    "suggestion FROM gradients ORDER BY gradient_id",
    "optimizations": "SELECT optimization_id, module, target_id, operation, before_json, "
    "after_json, status, valid_before, valid_after FROM optimizations ORDER BY optimization_id",
    "router_operations": "SELECT operation_id, operation, router_ids_json, result_ids_json, "
    "after_json FROM router_operations ORDER BY operation_id",
    "rules": "SELECT agent_id, rule_id, step, version, text, executable_json FROM "
    "filter_rule_versions ORDER BY agent_id, rule_id, step, version",
    "routers": "SELECT router_id, version, tau, text FROM router_versions "
    "ORDER BY router_id, version",
}


def test_a_recorded_llm_backward_run_replays_identically(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    with LLMTestServer(FakeLLM(bad_gradients=1)) as server:
        recorded = llm_backward_scenario(server, tmp_path / "a")
        recorded.llm.cache.enabled, recorded.llm.cache.path = True, str(cache)
        first = asyncio.run(simulate(recorded))
        n_requests = server.count()
        replay = llm_backward_scenario(server, tmp_path / "b")
        replay.llm.backend, replay.llm.cache.path = "replay", str(cache)
        second = asyncio.run(simulate(replay))
        assert server.count() == n_requests  # nothing was asked again
    assert second.metrics == first.metrics
    for name, sql in BACKWARD_TABLES.items():
        recorded_rows = query(first.trace_path, sql)
        assert recorded_rows, name
        assert query(second.trace_path, sql) == recorded_rows, name

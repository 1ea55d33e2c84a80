"""LLMBrain with a scripted backend: what each operation asks, returns, repairs, falls back to."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from llm_responder import NOT_A_CANDIDATE, FakeLLM

from recnet.brain.base import InteractionTask, MergeTask, RankTask, SummarizeTask
from recnet.brain.factory import build_brain
from recnet.brain.llm import FALLBACK_RULE, LLM_RULE, LLMBrain, attributes_to_weights
from recnet.brain.offline import OfflineBrain
from recnet.config.scenario import FilterSettings, Scenario
from recnet.data.types import Item
from recnet.errors import BackendError, BudgetExceeded
from recnet.llm.pack import load_pack
from recnet.llm.protocol import LLMRequest, LLMResponse, request_key
from recnet.llm.scripted import ScriptedBackend
from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.buffer import MessageBuffer, RouterMessage
from recnet.world.content import item_attributes, item_description
from recnet.world.profile import add_scaled, normalized, top
from recnet.world.rules import FilterMemory, default_rules

FILTERS = FilterMemory(default_rules(FilterSettings()))
Answer = Callable[[LLMRequest], str]


#: the paper's separate operations (the unfused ablation); tests/test_llm_economy.py covers the
#: fused, batched defaults
UNFUSED = {"fuse": [], "reflect_on": "always", "batch_size": 1}


def scenario(**llm: Any) -> Scenario:
    return Scenario.model_validate(
        {"seed": 11, "llm": {"backend": "scripted", "max_repairs": 1, **UNFUSED, **llm}}
    )


def client(agent_id: str, original: dict[str, float], text: str | None = None) -> ClientAgent:
    kind = "user" if agent_id.startswith("u:") else "item"
    return ClientAgent(
        agent_id=agent_id,
        kind=kind,  # type: ignore[arg-type]
        key=agent_id[2:],
        label=f"Film {agent_id[2:]}" if kind == "item" else f"user {agent_id[2:]}",
        original=original,
        buffer=MessageBuffer(4),
        filters=FILTERS,
        text=text,
    )


def brain_with(answer: Answer, **llm: Any) -> tuple[LLMBrain, ScriptedBackend, list[dict]]:
    backend = ScriptedBackend(answer)
    records: list[dict] = []
    brain = LLMBrain(scenario(**llm), backend, on_record=records.append, run_id="run-1")
    return brain, backend, records


def by_operation(answers: dict[str, Callable[[LLMRequest], Any]]) -> Answer:
    """Per-operation answers; anything not listed comes from FakeLLM."""
    fake = FakeLLM()

    def answer(request: LLMRequest) -> str:
        custom = answers.get(request.operation)
        if custom is None:
            return fake.for_request(request)
        value = custom(request)
        return value if isinstance(value, str) else json.dumps(value)

    return answer


def prompt(request: LLMRequest) -> str:
    return str(request.messages[-1]["content"])


def interaction(user: ClientAgent, positive: ClientAgent, negative: ClientAgent) -> InteractionTask:
    return InteractionTask(
        user,
        positive,
        negative,
        step=3,
        popularity={positive.agent_id: 0.0, negative.agent_id: 0.0},
    )


def noir_world() -> tuple[ClientAgent, ClientAgent, ClientAgent]:
    user = client("u:1", {"genre:noir": 1.0}, "Enjoys noir, detectives, rain.")
    positive = client("i:7", {"genre:noir": 1.0}, "Film 7; genres: noir; tags: detectives, rain")
    negative = client("i:9", {"genre:musical": 1.0}, "Film 9; genres: musical; tags: dancing")
    return user, positive, negative


# interact --------------------------------------------------------------------------------------
async def test_interact_predicts_reflects_and_extracts_changed_profiles() -> None:
    brain, backend, records = brain_with(FakeLLM().for_request)
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    assert outcome.chosen == "i:7" and outcome.correct
    assert set(outcome.updates) == {"u:1", "i:7"}  # correct: the passed-over item is left alone
    user_update = outcome.updates["u:1"]
    assert user_update.text is not None and user_update.text != user.text
    assert "theme:detectives" in user_update.weights  # weights come from extracting the new text
    assert all(w == 1.0 for w in user_update.weights.values())
    operations = [r["operation"] for r in records]
    assert operations == ["predict", "reflect_user", "reflect_item", "extract", "extract"]
    assert [r["agent_id"] for r in records] == ["u:1", "u:1", "i:7", "u:1", "i:7"]
    assert {(r["step"], r["phase"], r["run_id"]) for r in records} == {(3, "interact", "run-1")}
    pack = load_pack("default")
    assert {(r["pack_name"], r["pack_version"], r["pack_hash"]) for r in records} == {
        (pack.name, pack.version, pack.hash)
    }
    assert all(request.seed == 11 for request in backend.requests)
    assert records[0]["request_key"] == request_key(backend.requests[0])
    assert brain.operations.counts == Counter(operations)
    predict_prompt = prompt(backend.requests[0])
    assert "i:7: Film 7" in predict_prompt and "i:9: Film 9" in predict_prompt


async def test_wrong_choice_reflects_both_items() -> None:
    brain, _, records = brain_with(by_operation({"predict": lambda r: {"chosen": "i:9"}}))
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    assert outcome.chosen == "i:9" and not outcome.correct
    reflected = [r["agent_id"] for r in records if r["operation"] == "reflect_item"]
    assert reflected == ["i:7", "i:9"]
    roles = [
        "passed_over"
        if "Your role: passed_over" in json.loads(r["messages_json"])[-1]["content"]
        else "consumed"
        for r in records
        if r["operation"] == "reflect_item"
    ]
    assert roles == ["consumed", "passed_over"]
    assert "Outcome: wrong" in json.loads(records[1]["messages_json"])[-1]["content"]


async def test_answer_naming_a_non_candidate_is_repaired() -> None:
    answers = iter([{"chosen": NOT_A_CANDIDATE}, {"chosen": "9"}])  # the bare key is accepted
    brain, backend, records = brain_with(by_operation({"predict": lambda r: next(answers)}))
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    assert outcome.chosen == "i:9"
    assert brain.stats.repairs == 1 and brain.stats.fallbacks == 0
    repair = backend.requests[1]
    assert repair.operation == "predict"
    assert NOT_A_CANDIDATE in prompt(repair) and "i:7" in prompt(repair)
    predict_records = [r for r in records if r["operation"] == "predict"]
    assert [r["parsed_ok"] for r in predict_records] == [False, True]
    assert [r["repairs"] for r in predict_records] == [0, 1]


async def test_stubborn_non_candidate_falls_back_to_the_offline_score() -> None:
    brain, _, records = brain_with(by_operation({"predict": lambda r: {"chosen": "i:404"}}))
    user = client("u:1", {"genre:musical": 1.0}, "Enjoys musicals.")
    _, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    # the fallback scores with weights: the musical fan picks the musical, which is wrong
    assert outcome.chosen == "i:9" and not outcome.correct
    assert brain.stats.repairs == 1 and brain.stats.fallbacks == 1
    predict_records = [r for r in records if r["operation"] == "predict"]
    assert [r["fallback"] for r in predict_records] == [False, True]
    assert set(outcome.updates) == {"u:1", "i:7", "i:9"}  # reflection still happens


async def test_failed_reflection_keeps_the_previous_profile() -> None:
    brain, _, _ = brain_with(by_operation({"reflect_user": lambda r: "no JSON here"}))
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    assert "u:1" not in outcome.updates and "i:7" in outcome.updates
    assert brain.stats.fallbacks == 1 and brain.stats.repairs == 1


async def test_failed_extraction_keeps_weights_but_takes_the_new_text() -> None:
    brain, _, _ = brain_with(by_operation({"extract": lambda r: {"attributes": "oops"}}))
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    update = outcome.updates["u:1"]
    assert update.weights == user.original
    assert update.text is not None and update.text != user.text
    assert brain.stats.fallbacks == 2  # the user's and the item's extraction


async def test_unchanged_reflection_makes_no_extract_call() -> None:
    same = {
        "reflect_user": lambda r: {"updated_profile": "Enjoys noir, detectives, rain."},
        "reflect_item": lambda r: {
            "updated_profile": "Film 7; genres: noir; tags: detectives, rain"
        },
    }
    brain, _, records = brain_with(by_operation(same))
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    assert outcome.updates == {}
    assert "extract" not in [r["operation"] for r in records]


async def test_backend_error_propagates_after_recording_the_attempts() -> None:
    def answer(request: LLMRequest) -> Any:
        if request.operation == "reflect_item":
            return BudgetExceeded("llm.budget.max_calls reached", "raise it")
        return FakeLLM().for_request(request)

    brain, _, records = brain_with(answer)
    user, positive, negative = noir_world()
    with pytest.raises(BudgetExceeded):
        await brain.interact([interaction(user, positive, negative)])
    failed = [r for r in records if r["operation"] == "reflect_item"]
    assert len(failed) == 1 and "max_calls" in failed[0]["error"]
    assert records[0]["operation"] == "predict"


# summarize -------------------------------------------------------------------------------------
async def test_summarize_writes_text_and_blends_weights() -> None:
    brain, backend, records = brain_with(
        by_operation({"summarize": lambda r: {"profile": "Noir lovers and rainy detectives."}})
    )
    router = RouterAgent("r:2", {"genre:noir": 1.0}, tau=0.3)
    routed = {"tag:rain": 0.5, "genre:noir": 0.2}
    [update] = await brain.summarize([SummarizeTask(router, routed, step=4)])
    assert update.text == "Noir lovers and rainy detectives."
    ema = brain.propagation.router_ema
    expected = normalized(top(add_scaled({"genre:noir": 1 - ema}, normalized(routed), ema), 32))
    assert update.weights == pytest.approx(expected)
    assert "tag: rain (+0.50)" in prompt(backend.requests[0])
    assert (records[0]["phase"], records[0]["agent_id"], records[0]["step"]) == (
        "integrate",
        "r:2",
        4,
    )


async def test_failed_summary_keeps_the_router_profile() -> None:
    brain, _, _ = brain_with(by_operation({"summarize": lambda r: "{}"}))
    router = RouterAgent("r:2", {"genre:noir": 1.0}, tau=0.3, text="Noir lovers.")
    [update] = await brain.summarize([SummarizeTask(router, {"tag:rain": 0.5}, step=4)])
    assert update.weights == {"genre:noir": 1.0} and update.text == "Noir lovers."
    assert brain.stats.fallbacks == 1


# merge -----------------------------------------------------------------------------------------
def messages_for(receiver: ClientAgent) -> list[RouterMessage]:
    return [
        RouterMessage(1, "r:1", receiver.agent_id, 2, 0.9, {"tag:rain": 1.0}, "Rainy noir fans."),
        RouterMessage(2, "r:2", receiver.agent_id, 2, 0.1, {"genre:musical": 1.0}, ""),
        RouterMessage(3, "r:3", receiver.agent_id, 0, 0.5, {"tag:jazz": 1.0}, "Jazz."),
    ]


async def test_merge_maps_indices_and_named_rules_to_decisions() -> None:
    answer = {
        "propagated_profile": "Also likes rain.",
        "accepted": [0],
        "rejected": [1, 2],
        "rule_ids": {"1": "rule-min_relevance", "2": "made-up-rule"},
    }
    brain, backend, records = brain_with(by_operation({"merge": lambda r: answer}))
    user, _, _ = noir_world()
    task = MergeTask(user, messages_for(user), step=2)
    [outcome] = await brain.merge([task])
    assert outcome.decisions == [
        ("accepted", LLM_RULE),
        ("rejected", "rule-min_relevance"),
        ("rejected", LLM_RULE),
    ]
    assert outcome.propagated is not None
    assert outcome.propagated.text == "Also likes rain."
    damping = brain.propagation.merge_damping
    assert outcome.propagated.weights == pytest.approx({"tag:rain": damping * 1.0})
    text = prompt(backend.requests[0])
    assert "[rule-recency]" in text and "[1] router r:2 (similarity 0.10" in text
    assert "genre musical" in text  # an empty message text is rendered from its weights
    assert records[0]["phase"] == "receive"


async def test_merge_with_bad_indices_is_repaired_then_falls_back() -> None:
    bad = {"propagated_profile": "x", "accepted": [0, 7], "rejected": [0]}
    brain, backend, _ = brain_with(by_operation({"merge": lambda r: bad}))
    user, _, _ = noir_world()
    [outcome] = await brain.merge([MergeTask(user, messages_for(user), step=2)])
    assert outcome.propagated is None
    assert outcome.decisions == [("dropped", FALLBACK_RULE)] * 3
    assert brain.stats.repairs == 1 and brain.stats.fallbacks == 1
    assert "[7] do not exist" in prompt(backend.requests[1])


async def test_merge_without_filters_takes_every_message() -> None:
    answer = {"propagated_profile": "All of it.", "accepted": [], "rejected": [0, 1, 2]}
    backend = ScriptedBackend(by_operation({"merge": lambda r: answer}))
    settings = Scenario.model_validate(
        {"llm": {"backend": "scripted"}, "world": {"filters": {"enabled": False}}}
    )
    brain = LLMBrain(settings, backend)
    user, _, _ = noir_world()
    [outcome] = await brain.merge([MergeTask(user, messages_for(user), step=2)])
    assert [d for d, _ in outcome.decisions] == ["accepted"] * 3
    assert "no rules" in prompt(backend.requests[0])


# rank ------------------------------------------------------------------------------------------
def rank_task() -> RankTask:
    user, positive, negative = noir_world()
    third = client("i:3", {"genre:noir": 0.5, "genre:musical": 0.5}, "Film 3; noir musical")
    return RankTask(user, [negative, third, positive], popularity=[0.0, 0.0, 0.0])


async def test_rank_turns_the_ranking_into_scores() -> None:
    ranking = {"ranking": ["i:7", "i:3", "i:9"], "reasoning": "noir first"}
    brain, backend, records = brain_with(by_operation({"rank": lambda r: ranking}))
    brain.step = 5
    [outcome] = await brain.rank([rank_task()])
    assert outcome.ok and outcome.scores == [1.0, 2.0, 3.0]  # candidates: i:9, i:3, i:7
    assert outcome.reasoning == "noir first"
    assert (records[0]["phase"], records[0]["step"]) == ("evaluate", 5)
    text = prompt(backend.requests[0])
    assert all(f"{c}: " in text for c in ("i:9", "i:3", "i:7"))


async def test_rank_that_is_not_a_permutation_is_repaired_then_falls_back() -> None:
    answers = iter(
        [
            {"ranking": ["i:7", "i:7", "i:42"]},
            {"ranking": ["i:7", "i:3"]},
        ]
    )
    brain, backend, _ = brain_with(by_operation({"rank": lambda r: next(answers)}))
    task = rank_task()
    [outcome] = await brain.rank([task])
    assert not outcome.ok
    offline = OfflineBrain(brain.scenario)
    expected = [offline.score(task.user, c, 0.0) for c in task.candidates]
    assert outcome.scores == pytest.approx(expected)
    feedback = prompt(backend.requests[1])
    assert "unknown: i:42" in feedback and "twice: i:7" in feedback
    assert "missing: i:9, i:3" in feedback
    assert brain.stats.repairs == 1 and brain.stats.fallbacks == 1


# concurrency and records -----------------------------------------------------------------------
class Gauge:
    """A backend that counts calls in flight."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.in_flight += 1
        self.calls += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.005)
            return LLMResponse(self.answer(request), 10, 10, 5.0, request.model)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


async def test_calls_in_flight_never_exceed_max_concurrency() -> None:
    gauge = Gauge(FakeLLM().for_request)
    records: list[dict] = []
    brain = LLMBrain(scenario(max_concurrency=3), gauge, on_record=records.append)
    tasks = []
    for n in range(6):
        user = client(f"u:{n}", {"genre:noir": 1.0}, f"Enjoys noir number{n}.")
        positive = client(f"i:{n}", {"genre:noir": 1.0}, f"Film {n}; genres: noir")
        negative = client(f"i:{n + 10}", {"genre:musical": 1.0}, f"Film {n + 10}; musical")
        tasks.append(interaction(user, positive, negative))
    outcomes = await brain.interact(tasks)
    assert len(outcomes) == 6
    assert gauge.peak == 3  # bounded, and the bound is actually reached
    assert gauge.calls == len(records) > 6
    # records come in task order, each task's calls in program order
    users = [r["agent_id"] for r in records if r["operation"] == "predict"]
    assert users == [f"u:{n}" for n in range(6)]
    first_task = records[: records.index(next(r for r in records if r["agent_id"] == "u:1"))]
    assert [r["operation"] for r in first_task][:3] == ["predict", "reflect_user", "reflect_item"]


async def test_same_answers_give_the_same_outcomes_and_records() -> None:
    runs = []
    for _ in range(2):
        brain, _, records = brain_with(FakeLLM().for_request, max_concurrency=4)
        tasks = []
        for n in range(4):
            user = client(f"u:{n}", {"genre:noir": 1.0}, f"Enjoys noir word{n}.")
            positive = client(f"i:{n}", {"genre:noir": 1.0}, f"Film {n}; genres: noir")
            negative = client(f"i:{n + 10}", {"genre:jazz": 1.0}, f"Film {n + 10}; jazz word{n}")
            tasks.append(interaction(user, positive, negative))
        outcomes = await brain.interact(tasks)
        keys = [(r["operation"], r["agent_id"], r["request_key"]) for r in records]
        runs.append((outcomes, keys))
    assert runs[0] == runs[1]


# init, weights, factory ------------------------------------------------------------------------
async def test_items_start_from_metadata_without_calls() -> None:
    brain, backend, records = brain_with(FakeLLM().for_request)
    item = Item("5", "Heat", ("Crime", "Thriller"), 1995, ("heist",))
    profiles = await brain.extract_items([item])
    assert profiles["5"].weights == item_attributes(item)
    assert profiles["5"].text == item_description(item)
    assert backend.calls == 0 and records == []


def test_extracted_attributes_become_weights() -> None:
    weights = attributes_to_weights(
        {"Genre": ["Film Noir", "not  gory", " "], "era": ["1940s"], "a:b": ["x"]}, size=3
    )
    assert weights == {"genre:film noir": 1.0, "genre:gory": -1.0, "era:1940s": 1.0}


def test_checkpoint_state_round_trips_the_counters() -> None:
    brain, _, _ = brain_with(FakeLLM().for_request)
    brain.stats.calls, brain.stats.repairs, brain.step = 7, 2, 4
    state = brain.state()
    other, _, _ = brain_with(FakeLLM().for_request)
    stats = other.stats
    other.restore(state)
    assert other.stats is stats and (stats.calls, stats.repairs, other.step) == (7, 2, 4)


async def test_build_brain_offline_and_llm() -> None:
    assert isinstance(build_brain(Scenario()), OfflineBrain)
    records: list[dict] = []
    answer = json.dumps({"ranking": ["i:9", "i:3", "i:7"]})
    settings = scenario(options={"answers": [answer]})
    brain = build_brain(settings, on_record=records.append, run_id="r")
    assert isinstance(brain, LLMBrain) and brain.kind == "llm"
    [outcome] = await brain.rank([rank_task()])
    assert outcome.ok and outcome.scores == [3.0, 2.0, 1.0]
    assert brain.stats.calls == 1  # the stack's wrappers count into the brain's stats
    assert records[0]["run_id"] == "r"
    await brain.aclose()


def test_build_brain_replay_needs_a_recording(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no cache file"):
        build_brain(scenario(backend="replay"))
    with pytest.raises(BackendError, match="does not exist"):
        build_brain(scenario(backend="replay"), cache_path=tmp_path / "missing.sqlite")

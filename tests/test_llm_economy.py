"""The LLM brain's economical defaults: fused choose+merge and reflection, reflection only after a
wrong choice, batched summarize/merge/extract with per-agent validation, superseded messages,
bounded prompt texts, per-operation tokens; the call plan the dry run counts."""

from __future__ import annotations

import json

import pytest
from llm_responder import FakeLLM
from test_llm_brain import (
    brain_with,
    by_operation,
    client,
    interaction,
    messages_for,
    noir_world,
    prompt,
)

from recnet.brain.base import MergeTask, OperationCounts, SummarizeTask
from recnet.brain.call_plan import CallPlan
from recnet.brain.llm_merge import SUPERSEDED_RULE
from recnet.brain.offline import reinforce
from recnet.config.scenario import LLMSettings
from recnet.world.agents import RouterAgent
from recnet.world.buffer import RouterMessage

NEW = {"fuse": ["choose_merge", "reflect"], "reflect_on": "wrong", "batch_size": 16}


def operations(records: list[dict]) -> list[str]:
    return [r["operation"] for r in records]


# choose + merge --------------------------------------------------------------------------------
async def test_user_with_messages_merges_and_chooses_in_one_call() -> None:
    brain, backend, records = brain_with(FakeLLM().for_request, **NEW)
    user, positive, negative = noir_world()
    task = interaction(user, positive, negative)
    task.messages = messages_for(user)
    [outcome] = await brain.interact([task])
    assert operations(records) == ["choose_merge"]  # right choice: no reflection call
    assert outcome.chosen == "i:7" and outcome.correct
    assert outcome.merge is not None
    decided = [d for d, _ in outcome.merge.decisions]
    assert decided == ["accepted", "rejected", "rejected"]  # only r:1 shares a word (rain)
    assert outcome.merge.propagated is not None and "rainy" in outcome.merge.propagated.text
    text = prompt(backend.requests[0])
    # static instructions first, the agent's data last (prefix caching), candidates at the end
    assert text.index("Return") < text.index("[rule-recency]") < text.index("Your profile:")
    assert text.rstrip().endswith("i:7: Film 7; genres: noir; tags: detectives, rain") or (
        text.rstrip().endswith("i:9: Film 9; genres: musical; tags: dancing")
    )


async def test_older_messages_of_a_router_are_superseded_and_not_shown() -> None:
    brain, backend, _ = brain_with(FakeLLM().for_request, **NEW)
    user, positive, negative = noir_world()
    task = interaction(user, positive, negative)
    task.messages = [
        RouterMessage(1, "r:1", "u:1", 1, 0.9, {"tag:rain": 1.0}, "Old rainy noir."),
        RouterMessage(2, "r:1", "u:1", 2, 0.9, {"tag:rain": 1.0}, "Newer rainy noir."),
    ]
    [outcome] = await brain.interact([task])
    assert outcome.merge is not None
    assert outcome.merge.decisions[0] == ("dropped", SUPERSEDED_RULE)
    assert outcome.merge.decisions[1][0] == "accepted"
    text = prompt(backend.requests[0])
    assert "Newer rainy noir." in text and "Old rainy noir." not in text


async def test_right_choice_reinforces_weights_without_a_call() -> None:
    brain, _, records = brain_with(FakeLLM().for_request, **NEW)
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    assert operations(records) == ["predict"] and outcome.correct
    expected = reinforce(user, positive, brain.interaction, brain.profile_size)
    assert {a: u.weights for a, u in outcome.updates.items()} == {
        a: u.weights for a, u in expected.items()
    }
    assert all(update.text is None for update in outcome.updates.values())  # texts kept


async def test_wrong_choice_reflects_user_and_items_in_one_call_with_attributes() -> None:
    answer = by_operation({"predict": lambda r: {"chosen": "i:9"}})
    brain, backend, records = brain_with(answer, **NEW)
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    assert operations(records) == ["predict", "reflect_fused"]  # no extract calls
    assert set(outcome.updates) == {"u:1", "i:7", "i:9"}
    assert "not for" in (outcome.updates["i:9"].text or "")
    assert outcome.updates["i:9"].weights.get("mood:noir") == -1.0  # a dislike from attributes
    assert "theme:detectives" in outcome.updates["u:1"].weights
    assert records[1]["tokens_in"] and records[1]["tokens_out"]
    assert brain.operations.prompt_tokens["reflect_fused"] == records[1]["tokens_in"]
    assert brain.operations.output_tokens["reflect_fused"] == records[1]["tokens_out"]
    assert '"u:1", "i:7", "i:9"' in prompt(backend.requests[1])


async def test_a_missing_part_of_a_fused_reflection_is_re_asked_alone() -> None:
    fake = FakeLLM()

    def partial(request):  # answers for the user only
        answer = json.loads(fake.for_request(request))
        return {"profiles": {"u:1": answer["profiles"]["u:1"]}}

    answers = {"predict": lambda r: {"chosen": "i:9"}, "reflect_fused": partial}
    brain, _, records = brain_with(by_operation(answers), **NEW)
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    assert operations(records)[:2] == ["predict", "reflect_fused"]
    assert sorted(operations(records)[2:]) == sorted(
        ["reflect_item", "reflect_item", "extract_batch"]
    )
    assert set(outcome.updates) == {"u:1", "i:7", "i:9"}


async def test_unfused_reflection_extracts_the_changed_texts_in_one_batch() -> None:
    answer = by_operation({"predict": lambda r: {"chosen": "i:9"}})
    brain, _, records = brain_with(answer, fuse=[], reflect_on="always", batch_size=16)
    user, positive, negative = noir_world()
    [outcome] = await brain.interact([interaction(user, positive, negative)])
    assert operations(records) == [
        "predict",
        "reflect_user",
        "reflect_item",
        "reflect_item",
        "extract_batch",
    ]
    assert "theme:detectives" in outcome.updates["u:1"].weights


# batches ---------------------------------------------------------------------------------------
async def test_summaries_of_several_routers_share_a_call_and_a_bad_part_is_re_asked() -> None:
    def batch(request):
        return {"profiles": {"r:1": "Noir and rain.", "r:2": "", "r:3": "Jazz nights."}}

    answers = {"summarize_batch": batch, "summarize": lambda r: {"profile": "Musicals again."}}
    brain, backend, records = brain_with(by_operation(answers), **NEW)
    routers = [RouterAgent(f"r:{n}", {"genre:noir": 1.0}, tau=0.3) for n in (1, 2, 3)]
    tasks = [SummarizeTask(r, {"tag:rain": 0.5}, step=4) for r in routers]
    updates = await brain.summarize(tasks)
    assert [u.text for u in updates] == ["Noir and rain.", "Musicals again.", "Jazz nights."]
    assert operations(records) == ["summarize_batch", "summarize"]
    assert records[0]["agent_id"] == "r:1+2" and records[1]["agent_id"] == "r:2"
    assert "### r:3" in prompt(backend.requests[0])


async def test_merges_of_several_clients_share_a_call_with_shared_text_written_once() -> None:
    brain, backend, records = brain_with(FakeLLM().for_request, **NEW)
    user, positive, negative = noir_world()
    tasks = [MergeTask(c, messages_for(c), step=2) for c in (user, positive, negative)]
    outcomes = await brain.merge(tasks)
    assert operations(records) == ["merge_batch"]
    assert [d for d, _ in outcomes[0].decisions] == ["accepted", "rejected", "rejected"]
    assert outcomes[0].decisions[1][1] == "rule-min_relevance"
    assert all(len(o.decisions) == 3 for o in outcomes)
    text = prompt(backend.requests[0])
    assert text.count("Rainy noir fans.") == 1  # a router message is written once per batch
    assert text.count("[rule-recency]") == 1  # the shared filter memory too
    assert text.count("Filter rules: shared") == 3


async def test_an_invalid_part_of_a_batched_merge_is_re_asked_alone() -> None:
    fake = FakeLLM()

    def broken(request):
        answer = json.loads(fake.for_request(request))
        answer["clients"]["i:7"]["accepted"] = [0, 9]  # an index that does not exist
        return answer

    brain, _, records = brain_with(by_operation({"merge_batch": broken}), **NEW)
    user, positive, negative = noir_world()
    tasks = [MergeTask(c, messages_for(c), step=2) for c in (user, positive, negative)]
    outcomes = await brain.merge(tasks)
    assert operations(records) == ["merge_batch", "merge"]
    assert records[1]["agent_id"] == "i:7"
    assert all(d != "dropped" for o in outcomes for d, _ in o.decisions)


async def test_prompt_texts_are_bounded() -> None:
    brain, backend, _ = brain_with(FakeLLM().for_request, **NEW, max_profile_chars=60)
    user, positive, _ = noir_world()
    long = client("i:9", {"genre:musical": 1.0}, "Film 9; " + "dancing " * 100)
    await brain.interact([interaction(user, positive, long)])
    line = next(x for x in prompt(backend.requests[0]).splitlines() if x.startswith("i:9: "))
    assert len(line) <= len("i:9: ") + 60 and line.endswith("…")


# the call plan the dry run counts ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "merged", "correct", "expected"),
    [
        (NEW, True, True, {"choose_merge": 1}),
        (NEW, False, False, {"predict": 1, "reflect_fused": 1}),
        (
            {"fuse": [], "reflect_on": "always", "batch_size": 1},
            False,
            False,
            {"predict": 1, "reflect_user": 1, "reflect_item": 2, "extract": 3},
        ),
        (
            {"fuse": [], "reflect_on": "always", "batch_size": 4},
            False,
            True,
            {"predict": 1, "reflect_user": 1, "reflect_item": 1, "extract_batch": 1},
        ),
    ],
)
def test_call_plan_of_one_interaction(
    settings: dict, merged: bool, correct: bool, expected: dict[str, int]
) -> None:
    counts = OperationCounts()
    CallPlan(LLMSettings.model_validate(settings), counts).interaction(
        merged=merged, correct=correct
    )
    assert counts.counts == expected


def test_call_plan_batches_independent_operations() -> None:
    counts = OperationCounts()
    plan = CallPlan(LLMSettings(batch_size=8), counts)
    plan.batched("merge", 17)  # 8 + 8 + a single one
    plan.batched("summarize", 10)  # 8 + 2
    assert counts.counts == {"merge_batch": 2, "merge": 1, "summarize_batch": 2}
    assert plan.batches(17) == 3

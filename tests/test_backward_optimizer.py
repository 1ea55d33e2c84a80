"""Offline credit assignment and optimizer decisions, module by module."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from recnet.brain.base import RankTask
from recnet.brain.credit import (
    ContributionLog,
    Feedback,
    GradientInput,
    ModuleJudgement,
    OfflineScorer,
    ProfileIndex,
    Side,
    counterfactual_gradient,
)
from recnet.brain.offline import OfflineBrain
from recnet.brain.optimizer import (
    OptimizerSettings,
    RouterState,
    RuleEdit,
    aggregate,
    apply_rule_edits,
    net,
    optimize_filters,
    optimize_profile,
    optimize_router,
    plan_merges,
)
from recnet.config.scenario import FilterSettings, Scenario
from recnet.world.agents import ClientAgent
from recnet.world.buffer import MessageBuffer, RouterMessage
from recnet.world.rules import FilterMemory, default_rules

SETTINGS = OptimizerSettings(tolerance=0.01, tau_bounds=(0.1, 0.6))
MEMORY = FilterMemory(default_rules(FilterSettings()), max_rules=5)


def judgement(module: str, target: str, effect: float, **fields: object) -> ModuleJudgement:
    verdict = "negative" if effect < -0.01 else "positive" if effect > 0.01 else "neutral"
    return ModuleJudgement(module, target, verdict, "r", "s", effect, **fields)  # type: ignore[arg-type]


# -- credit --------------------------------------------------------------------------------------


def message(router: str, attributes: dict[str, float], score: float, step: int = 0):
    return RouterMessage(0, router, "u:1", step, score, attributes, "")


def test_contribution_log_follows_the_merge_arithmetic() -> None:
    log = ContributionLog(damping=0.5)
    log.observe(
        "u:1",
        [message("r:0", {"a": 1.0}, 0.6), message("r:1", {"b": 1.0}, 0.2)],
        [("accepted", None), ("accepted", None)],
    )
    shares = {r: e.share for r, e in log.received("u:1").items()}
    assert shares == pytest.approx({"r:0": 0.5 * 0.75, "r:1": 0.5 * 0.25})
    log.observe(
        "u:1",
        [message("r:2", {"c": 1.0}, 0.4, 1), message("r:1", {"b": 1.0}, 0.4, 1)],
        [("accepted", None), ("rejected", "rule-min_relevance")],
    )
    entries = log.received("u:1")
    assert entries["r:0"].share == pytest.approx(0.375 * 0.5)
    assert entries["r:2"].share == pytest.approx(0.5)
    assert entries["r:1"].decision == "rejected" and entries["r:1"].missed == pytest.approx(0.25)
    parts = log.router_parts("u:1", {"a": 2.0, "c": 1.0})
    assert set(parts) == {"r:0", "r:1", "r:2"}
    total = {a: sum(p.get(a, 0.0) for p in parts.values()) for a in "abc"}
    assert np.linalg.norm(list(total.values())) == pytest.approx(np.hypot(2.0, 1.0))
    missed, rejected = log.missed_part("u:1", {"a": 2.0, "c": 1.0}, {"x": 1.0})
    assert [e.message.router_id for e in rejected] == ["r:1"] and set(missed) == {"b"}


def gradient_case(router_part: dict[str, float], missed: dict[str, float]) -> GradientInput:
    user = Side({"genre:drama": 1.0}, dict(router_part))
    true = Side({"genre:drama": 1.0, "tag:slow": 0.5}, {})
    rival = Side({"genre:horror": 1.0}, {})
    fb = Feedback(0, 7, "u:1", "i:t", ("i:t", "i:w"), (0.1, 0.9))
    return GradientInput(
        feedback=fb,
        user=user,
        true=true,
        rival=rival,
        rival_id="i:w",
        router_parts={"user": {"r:0": dict(router_part)}},
        missed=missed,
        missed_messages=(),
        accepted_scores={"r:0": 0.4},
        rule_ids=(),
    )


def test_a_harmful_router_is_negative_and_a_helpful_one_positive() -> None:
    scorer = OfflineScorer(propagated_weight=1.0, popularity_weight=0.0)
    harmful = counterfactual_gradient(gradient_case({"genre:horror": 2.0}, {}), scorer, 0.01)
    by_module = {(j.module, j.target_id): j for j in harmful}
    router = by_module[("router", "r:0")]
    assert router.judgement == "negative" and router.effect is not None and router.effect < 0
    assert list(router.attributes) == ["genre:horror"] and router.message_scores == (0.4,)
    assert by_module[("propagated_profile", "u:1")].judgement == "negative"
    assert by_module[("filter_memory", "u:1")].judgement == "neutral"
    helpful = counterfactual_gradient(gradient_case({"tag:slow": 0.5}, {}), scorer, 0.01)
    router = next(j for j in helpful if j.module == "router")
    assert router.judgement == "positive" and router.suggestion == "no adjustment"


def test_feedback_reward_rank_and_rival() -> None:
    wrong = Feedback(0, 0, "u:1", "i:t", ("i:a", "i:t", "i:b"), (0.2, 0.5, 0.9))
    assert (wrong.chosen, wrong.rank, wrong.reward, wrong.rival) == ("i:b", 2, 0.0, "i:b")
    assert wrong.rank_signal == 0.5
    right = Feedback(0, 0, "u:1", "i:t", ("i:a", "i:t", "i:b"), (0.2, 0.9, 0.5))
    assert (right.chosen, right.rank, right.reward, right.rival) == ("i:t", 1, 1.0, "i:b")


def test_vectorised_scores_equal_the_offline_brains_rank() -> None:
    scenario = Scenario.model_validate({"interaction": {"propagated_weight": 0.7}})
    brain = OfflineBrain(scenario)
    rng = np.random.default_rng(5)
    names = [f"tag:t{k}" for k in range(30)]

    def agent(agent_id: str) -> ClientAgent:
        def weights(n: int) -> dict[str, float]:
            return {names[k]: float(rng.normal()) for k in rng.choice(30, n, replace=False)}

        kind = "user" if agent_id.startswith("u") else "item"
        return ClientAgent(
            agent_id,
            kind,
            agent_id,
            agent_id,
            weights(8),  # type: ignore[arg-type]
            MessageBuffer(2),
            MEMORY,
            propagated=weights(5) if rng.random() < 0.7 else {},
        )

    users = [agent(f"u:{k}") for k in range(4)]
    items = [agent(f"i:{k}") for k in range(6)]
    items[0].original = {}
    items[0].propagated = {}
    prior = {i.agent_id: float(rng.random()) for i in items}
    tasks = [RankTask(u, items, [prior[i.agent_id] for i in items]) for u in users]
    expected = [o.scores for o in asyncio.run(brain.rank(tasks))]
    scorer = OfflineScorer(0.7, scenario.interaction.popularity_weight)
    index = ProfileIndex()
    by_id = {i.agent_id: i for i in items}

    def item_form(item_id: str):
        item = by_id[item_id]
        return index.sparse(scorer.effective(item.original, item.propagated)), prior[item_id]

    got = scorer.score_lists(
        [Side(u.original, u.propagated) for u in users],
        [[i.agent_id for i in items]] * len(users),
        item_form,
        index,
    )
    for row, want in zip(got, expected, strict=True):
        assert row == pytest.approx(want, abs=1e-9)


# -- optimizer -----------------------------------------------------------------------------------


def test_judgements_are_batched_per_module_and_netted() -> None:
    js = [
        judgement("router", "r:1", -0.3),
        judgement("router", "r:1", 0.1),
        judgement("router", "r:2", 0.005),
    ]
    groups = aggregate(js)
    assert set(groups) == {("router", "r:1"), ("router", "r:2")}
    assert net(groups[("router", "r:1")], 0.01) == ("negative", pytest.approx(-0.2))
    assert net(groups[("router", "r:2")], 0.01)[0] == "neutral"
    llm = [
        ModuleJudgement("router", "r:1", "negative", "x", "y"),
        ModuleJudgement("router", "r:1", "negative", "x", "y"),
        ModuleJudgement("router", "r:1", "positive", "x", "y"),
    ]
    assert net(llm, 0.01) == ("negative", 0.0)
    assert net([], 0.01) == ("neutral", 0.0)


def test_profile_rewrite_dampens_only_harmful_attributes() -> None:
    profile = {"genre:horror": 0.8, "genre:drama": 0.4, "tag:gore": 0.2}
    rewrite = optimize_profile(
        "u:1",
        profile,
        [
            judgement(
                "propagated_profile",
                "u:1",
                -0.2,
                attributes={"genre:horror": 0.3, "tag:gore": 0.1, "genre:drama": -0.2},
            )
        ],
        SETTINGS,
    )
    assert rewrite is not None and rewrite.dampened == ("genre:horror", "tag:gore")
    assert rewrite.weights == {"genre:horror": 0.4, "genre:drama": 0.4, "tag:gore": 0.1}
    assert (
        optimize_profile("u:1", profile, [judgement("propagated_profile", "u:1", 0.2)], SETTINGS)
        is None
    )


def test_rule_edits_are_copy_on_write_and_bounded() -> None:
    edits = [
        RuleEdit("modify", "rule-min_relevance", params={"threshold": 0.2}),
        RuleEdit("delete", "rule-recency"),
        RuleEdit("add", "rule-text-1", kind="text", text="Ignore hype about sequels.", position=0),
        RuleEdit("reorder", "rule-max_share", position=1),
    ]
    memory = apply_rule_edits(MEMORY, edits, owner="u:9")
    assert MEMORY.owner == "*" and len(MEMORY.rules) == 4
    assert memory.owner == "u:9"
    assert [r.rule_id for r in memory.rules] == [
        "rule-text-1",
        "rule-max_share",
        "rule-conflict",
        "rule-min_relevance",
    ]
    relevance = memory.rule("min_relevance")
    assert relevance is not None and relevance.version == 2 and "0.20" in relevance.text
    full = apply_rule_edits(
        memory, [RuleEdit("add", "rule-x", kind="recency", params={"max_age": 3.0})], "u:9"
    )
    with pytest.raises(ValueError, match="full"):
        apply_rule_edits(
            full, [RuleEdit("add", "rule-y", kind="recency", params={"max_age": 3.0})], "u:9"
        )
    with pytest.raises(ValueError, match="no rule"):
        apply_rule_edits(MEMORY, [RuleEdit("delete", "rule-nope")], "u:9")


def test_filters_tighten_when_accepted_messages_hurt() -> None:
    rewrite = optimize_filters(
        "u:1",
        MEMORY,
        [judgement("propagated_profile", "u:1", -0.2, message_scores=(0.12, 0.3))],
        SETTINGS,
    )
    assert rewrite is not None
    memory = apply_rule_edits(MEMORY, rewrite.edits, "u:1")
    assert memory.rule("min_relevance").params["threshold"] == pytest.approx(0.15)  # one step
    assert memory.max_share() == pytest.approx(0.5 * 0.8)


def test_filters_loosen_when_rejected_messages_would_have_helped() -> None:
    rewrite = optimize_filters(
        "u:1",
        MEMORY,
        [
            judgement(
                "filter_memory",
                "u:1",
                -0.2,
                rule_ids=("rule-min_relevance",),
                message_scores=(0.02, 0.04),
            )
        ],
        SETTINGS,
    )
    assert rewrite is not None
    memory = apply_rule_edits(MEMORY, rewrite.edits, "u:1")
    assert memory.rule("min_relevance").params["threshold"] == pytest.approx(0.01)
    far = optimize_filters(
        "u:1",
        MEMORY,
        [
            judgement(
                "filter_memory",
                "u:1",
                -0.2,
                rule_ids=("rule-min_relevance",),
                message_scores=(-0.995,),
            )
        ],
        SETTINGS,
    )
    assert far is not None and far.edits == (RuleEdit("delete", "rule-min_relevance"),)


def router(spread: float, tau: float = 0.3, members: int = 20) -> RouterState:
    return RouterState("r:4", {"genre:horror": 0.8, "tag:gore": 0.6}, tau, members, spread)


def test_router_decisions_follow_credit_and_spread() -> None:
    bad = [judgement("router", "r:4", -0.3, attributes={"tag:gore": 0.2})]
    decision = optimize_router(router(0.8), bad, SETTINGS, n_routers=5)
    assert decision is not None and decision.op == "split"
    assert optimize_router(router(0.8), bad, SETTINGS, n_routers=SETTINGS.max_routers).op != "split"
    decision = optimize_router(router(0.2), bad, SETTINGS, n_routers=5)
    assert decision is not None and decision.op == "rewrite_tau"
    assert decision.tau == pytest.approx(0.32) and decision.dampened == ("tag:gore",)
    assert decision.profile["tag:gore"] < decision.profile["genre:horror"]
    at_top = optimize_router(router(0.2, tau=0.6), bad, SETTINGS, n_routers=5)
    assert at_top is not None and at_top.op == "rewrite" and at_top.tau is None
    good = optimize_router(router(0.2), [judgement("router", "r:4", 0.3)], SETTINGS, 5)
    assert good is not None and good.op == "tau" and good.tau == pytest.approx(0.29)
    assert optimize_router(router(0.2), [judgement("router", "r:4", 0.0)], SETTINGS, 5) is None


def test_merges_keep_the_router_count_above_its_minimum() -> None:
    pairs = [("r:1", "r:2", 0.99), ("r:3", "r:4", 0.98), ("r:5", "r:6", 0.5)]
    merges = plan_merges(pairs, n_routers=4, settings=SETTINGS)
    assert [(m.router_id, m.partner) for m in merges] == [("r:1", "r:2"), ("r:3", "r:4")]
    assert len(plan_merges(pairs, n_routers=3, settings=SETTINGS)) == 1
    assert plan_merges(pairs, n_routers=6, settings=SETTINGS, busy=["r:2"])[0].router_id == "r:3"


def test_a_filter_that_rejected_a_helpful_message_is_negative() -> None:
    log = ContributionLog(damping=0.5)
    log.observe(
        "u:1",
        [message("r:0", {"genre:horror": 1.0}, 0.5), message("r:1", {"tag:slow": 1.0}, 0.03)],
        [("accepted", None), ("rejected", "rule-min_relevance")],
    )
    propagated = {"genre:horror": 0.5}
    missed, rejected = log.missed_part("u:1", propagated, {"genre:drama": 1.0})
    case = gradient_case(propagated, missed)
    case = GradientInput(
        **{
            **{f: getattr(case, f) for f in GradientInput.__dataclass_fields__},
            "missed_messages": tuple(rejected),
        }
    )
    scorer = OfflineScorer(propagated_weight=1.0, popularity_weight=0.0)
    verdicts = {j.module: j for j in counterfactual_gradient(case, scorer, 0.01)}
    filters = verdicts["filter_memory"]
    assert filters.judgement == "negative"
    assert filters.rule_ids == ("rule-min_relevance",) and filters.message_scores == (0.03,)
    assert "rule-min_relevance" in filters.suggestion

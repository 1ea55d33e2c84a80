"""Evaluation: the brain ranks each held-out user's fixed candidate list; baselines score the same.

Pipeline position: after the last forward step (and, in the backward phase, on validation lists).
Candidate lists come from ``recnet.eval.protocol`` and are written to the trace once, so another
tool can reuse exactly the same lists; every ranking becomes a ``predictions`` row and every
metric a ``metrics`` row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from recnet.baselines.base import Scorer
from recnet.brain.base import RankTask
from recnet.context import RunContext
from recnet.eval.metrics import rank_of_true, summarize
from recnet.eval.protocol import CandidateSet, Split, Which, true_index
from recnet.world.agents import item_agent_id, user_agent_id
from recnet.world.formulas import popularity_prior
from recnet.world.world import World

RECNET = "recnet"
#: ``predictions`` rows a recorder holds before handing them to the trace store: a million-agent
#: run's final test would otherwise hold every test user's row (ranking and scores as JSON, ~1 KB)
#: of a model at once: ~0.3 GB for 333k users.
PREDICTION_ROWS_HELD = 10_000
#: Users whose candidate lists go to the brain in one ``rank`` call in ``rank_with_brain``.
RANK_USERS_AT_ONCE = 10_000


def candidate_rows(run_id: str, split: Which, candidates: CandidateSet, truth: Split) -> list[dict]:
    """Rows of the ``candidate_lists`` table for one split: a row per user's list."""
    held = truth.held_out(split)
    rows = []
    for user in sorted(candidates):
        items = list(candidates[user])
        true_item = held[user].item
        rows.append(
            {
                "run_id": run_id,
                "split": split,
                "user_id": user,
                "items_json": json.dumps(items),
                "positive": items.index(true_item) if true_item in items else None,
            }
        )
    return rows


def item_popularity(world: World) -> dict[str, float]:
    """Item agent id → log-popularity prior in [0, 1] from training interaction counts."""
    top = max((a.interactions for a in world.items.values()), default=0)
    return {a: popularity_prior(agent.interactions, top) for a, agent in world.items.items()}


class RankingRecorder:
    """Turns per-user candidate scores into ranks of the truth and ``predictions`` rows."""

    def __init__(
        self, ctx: RunContext, split: Split, which: Which, step: int, record: bool
    ) -> None:
        self.ctx, self.which, self.step, self.record = ctx, which, step, record
        self.held = split.held_out(which)
        self.rows: list[dict] = []

    def add(
        self,
        model: str,
        user: str,
        candidates: Sequence[str],
        scores: Sequence[float],
        reasoning: str | None = None,
    ) -> int:
        values = np.asarray(scores, dtype=np.float64)
        true_item = self.held[user].item
        rank = rank_of_true(values, true_index(candidates, true_item))
        if self.record:
            order = np.argsort(-values, kind="stable")
            self.rows.append(
                {
                    "run_id": self.ctx.run_id,
                    "step": self.step,
                    "split": self.which,
                    "model": model,
                    "user_id": user,
                    "true_item": true_item,
                    "ranking_json": json.dumps([candidates[i] for i in order]),
                    "scores_json": json.dumps([round(float(v), 6) for v in values]),
                    "rank": rank,
                    "reasoning": reasoning,
                }
            )
            if len(self.rows) >= PREDICTION_ROWS_HELD:
                self.ctx.store.add("predictions", self.rows)
                self.rows = []
        return rank

    def summary(self, ranks: Mapping[str, int]) -> dict[str, float]:
        if self.rows:
            self.ctx.store.add("predictions", self.rows)
            self.rows = []
        ranked = np.fromiter(ranks.values(), dtype=np.int64, count=len(ranks))
        return summarize(ranked, self.ctx.scenario.evaluation.ks)


async def rank_with_brain(
    ctx: RunContext,
    world: World,
    split: Split,
    candidates: CandidateSet,
    *,
    which: Which,
    step: int,
    record: bool = True,
) -> tuple[dict[str, float], dict[str, int]]:
    """Rank every candidate list with the brain; return (metrics, rank of the truth per user).
    Users go to the brain ``RANK_USERS_AT_ONCE`` at a time, so a million-agent final test does
    not hold every test user's task and outcome at once (rankings do not depend on the grouping)."""
    popularity = item_popularity(world)
    users = sorted(candidates)
    recorder = RankingRecorder(ctx, split, which, step, record)
    ranks: dict[str, int] = {}
    for start in range(0, len(users), RANK_USERS_AT_ONCE):
        chunk = users[start : start + RANK_USERS_AT_ONCE]
        tasks = []
        for user in chunk:
            items = [world.items[item_agent_id(i)] for i in candidates[user]]
            agent = world.users[user_agent_id(user)]
            tasks.append(
                RankTask(
                    user=agent,
                    candidates=items,
                    popularity=[popularity[i.agent_id] for i in items],
                    trend=world.trend_of(agent.agent_id),
                    recent=world.recent_of(agent),
                )
            )
        outcomes = await ctx.brain.rank(tasks)
        for user, outcome in zip(chunk, outcomes, strict=True):
            ranks[user] = recorder.add(
                RECNET, user, candidates[user], outcome.scores, outcome.reasoning
            )
    return recorder.summary(ranks), ranks


def evaluate_baselines(
    ctx: RunContext,
    scorers: Sequence[Scorer],
    split: Split,
    candidates: CandidateSet,
    *,
    which: Which,
    step: int,
) -> dict[str, dict[str, float]]:
    """Score the same candidate lists with fitted baselines and record their rankings."""
    results: dict[str, dict[str, float]] = {}
    for scorer in scorers:
        recorder = RankingRecorder(ctx, split, which, step, record=True)
        ranks = {
            user: recorder.add(
                scorer.name, user, candidates[user], scorer.score(user, candidates[user])
            )
            for user in sorted(candidates)
        }
        results[scorer.name] = recorder.summary(ranks)
    return results


def metric_rows(
    run_id: str,
    step: int,
    which: str,
    results: Mapping[str, Mapping[str, float]],
    flags: Mapping[str, str | None] | None = None,
) -> list[dict]:
    """``metrics`` rows; ``flags[model]`` marks values that are not its own (``metrics.flag``)."""
    return [
        {
            "run_id": run_id,
            "step": step,
            "split": which,
            "model": model,
            "metric": metric,
            "value": value,
            "flag": (flags or {}).get(model),
        }
        for model, summary in results.items()
        for metric, value in summary.items()
    ]

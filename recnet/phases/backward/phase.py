"""The backward phase: feedback → gradient → optimize, validated and reversible (DESIGN §2).

Pipeline position: a hook of the phase loop (``recnet.phases.loop``), run after reception and
before commit, every ``backward.every`` forward steps. One round:

1. *Feedback* — for each interaction, the user ranks the true item among ``feedback_negatives``
   sampled unseen items with the current profiles (``brain.rank``); reward L = 1 when the top
   item is the true one, plus the rank signal 1/rank. The interactions are the next step's
   (``backward.feedback: next``, the default: predicted before the forward phase learns them)
   or the step's own (``step``: already learned, so nearly all predictions are right and credit
   is weak). ``backward.select`` picks which predictions feed the gradient (all, errors, or a
   seeded sample). Every prediction is a ``predictions`` row with split ``feedback``.
2. *Gradient* — per selected prediction, one judgement per module that shaped it: the user's
   propagated profile and filter memory, and every router whose messages reached the user, the
   true item or the rival (the run's critic, ``recnet.critic``: counterfactual credit offline, the
   ``gradient`` template with an LLM). Gradients are ``gradients`` rows.
3. *Optimize* — judgements are batched per module and each module is optimised once (the critic's
   edits: rule-based offline, one ``optimize`` call per module with an LLM), in two validated
   batches: clients (propagated profiles, filter rules) and routers (rewrite, τ,
   split, merge).

Safeguard (``recnet.phases.backward.safeguard``): each batch is kept only if validation NDCG@10
does not drop by more than ``backward.epsilon``, else rolled back exactly. Budget: gradient and
optimize operations count against ``backward.max_calls``; once spent, the rest is skipped and
recorded.

The contributions the gradient needs (which routers' messages each client accepted or rejected)
are read from every forward step's merges (``StepState.merges``) into a ``ContributionLog``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recnet.brain.base import RankTask
from recnet.brain.credit import ContributionLog, Feedback, GradientInput, Received, Side
from recnet.brain.optimizer import (
    FilterRewrite,
    ModuleKey,
    OptimizerSettings,
    RouterState,
    plan_merges,
    routers_to_optimize,
)
from recnet.context import RunContext
from recnet.critic.base import ClientJob, Critic, Gradient, RouterJob
from recnet.data.types import Interaction
from recnet.eval.protocol import CandidateSet, Split
from recnet.phases.backward.plans import Planned, Planner
from recnet.phases.backward.safeguard import Safeguard, Verdict
from recnet.phases.forward import ForwardPhase, StepState
from recnet.registry import CRITICS
from recnet.trace.records import gradient_row, validation_reason
from recnet.world import router_ops
from recnet.world.agents import item_agent_id, user_agent_id
from recnet.world.profile import Weights
from recnet.world.world import World

log = logging.getLogger(__name__)


@dataclass
class BackwardState:
    """What a checkpoint carries of the backward phase (``Checkpointed``)."""

    log: dict[str, dict[str, Received]]  # the contribution log (client → router → received)
    calls: int  # backward operations paid so far


@dataclass
class RoundStats:
    n_gradients: int = 0
    n_negative: int = 0
    n_optimizations: int = 0
    n_kept: int = 0
    n_rolled_back: int = 0
    calls: int = 0
    skipped: str | None = None


class BackwardPhase:
    """One backward round per ``backward.every`` forward steps; see the module docstring."""

    def __init__(
        self,
        ctx: RunContext,
        world: World,
        forward: ForwardPhase,
        valid: CandidateSet,
        valid_items: Mapping[str, str],
        batches: Sequence[Sequence[Interaction]] = (),
    ) -> None:
        scenario = ctx.scenario
        self.ctx, self.world, self.forward = ctx, world, forward
        self.settings = scenario.backward
        self.optimizer = OptimizerSettings.from_scenario(scenario)
        self.log = ContributionLog(scenario.propagation.merge_damping)
        critic_name = self.settings.critic or ctx.brain.critic
        self.critic: Critic = CRITICS.get(critic_name)(ctx, world, self.optimizer)
        self.filters_on = scenario.world.filters.enabled
        self.batches = batches  # the training stream by step (feedback="next" reads ahead)
        self.safeguard = Safeguard(ctx, world, forward, self.log, valid, valid_items)
        self.merge = self.safeguard.merge  # the probes' merge (offline, unrecorded)
        store, run_id = ctx.store, ctx.run_id
        self.next_gradient = store.count("gradients", run_id) + 1
        self.next_optimization = store.count("optimizations", run_id) + 1
        self.planner = Planner(
            ctx, world, self.optimizer, store.count("router_operations", run_id) + 1
        )
        self.next_batch = len({r["batch"] for r in store.read("optimizations", run_id)}) + 1
        self.calls = sum(r["calls"] for r in store.read("backward_steps", run_id))

    # checkpoints -------------------------------------------------------------------------------
    def state(self) -> BackwardState:
        """What a checkpoint must keep to resume identically (ids are re-read from the trace)."""
        return BackwardState(self.log.clients, self.calls)

    def restore(self, state: BackwardState) -> None:
        self.log.clients, self.calls = state.log, state.calls

    # the hook ----------------------------------------------------------------------------------
    async def __call__(self, state: StepState) -> None:
        for client_id, messages, decisions in state.merges:
            self.log.observe(client_id, messages, decisions)
        if (state.step + 1) % self.settings.every:
            return
        await self.run(state)

    def budget_left(self) -> bool:
        limit = self.settings.max_calls
        return limit is None or self.calls < limit

    def _spend(self, stats: RoundStats, operation: str) -> bool:
        if not self.budget_left():
            if stats.skipped is None:
                stats.skipped = "budget"
                self.ctx.count("backward_budget_exhausted")
            return False
        self.calls += 1
        stats.calls += 1
        self.critic.spent(operation)
        return True

    async def run(self, state: StepState) -> RoundStats:
        started = self.ctx.clock()
        stats = RoundStats()
        self.safeguard.new_round()  # the forward step changed profiles
        feedback = await self.predict(state)
        selected = self.select(feedback, state.step)
        gradients = await self.gradient(selected, stats)
        groups: dict[ModuleKey, list[Gradient]] = {}
        for g in gradients:
            groups.setdefault((g.judgement.module, g.judgement.target_id), []).append(g)
        await self._batch(state.step, await self.plan_clients(groups, stats, state.step), stats)
        await self._batch(state.step, await self.plan_routers(groups, stats, state.step), stats)
        self.ctx.count("backward_rounds")
        self.ctx.count("backward_rollbacks", stats.n_rolled_back)
        self.ctx.count("backward_kept", stats.n_kept)
        self.ctx.store.add(
            "backward_steps",
            [
                {
                    "run_id": self.ctx.run_id,
                    "step": state.step,
                    "n_predictions": len(feedback),
                    "n_correct": sum(int(f.reward) for f in feedback),
                    "mean_rank_signal": (
                        float(np.mean([f.rank_signal for f in feedback])) if feedback else 0.0
                    ),
                    "n_selected": len(selected),
                    "n_gradients": stats.n_gradients,
                    "n_negative": stats.n_negative,
                    "n_optimizations": stats.n_optimizations,
                    "n_kept": stats.n_kept,
                    "n_rolled_back": stats.n_rolled_back,
                    "calls": stats.calls,
                    "skipped": stats.skipped,
                    "started_at": started,
                    "finished_at": self.ctx.clock(),
                }
            ],
        )
        return stats

    # 1. feedback -------------------------------------------------------------------------------
    async def predict(self, state: StepState) -> list[Feedback]:
        """Rank each interaction's true item among sampled unseen items; write predictions.

        The interactions are the step's own (``feedback="step"``) or the next step's, which the
        forward phase has not learned yet (``"next"``)."""
        world, ctx = self.world, self.ctx
        if self.settings.feedback == "next":
            following = state.step + 1
            interactions = list(self.batches[following]) if following < len(self.batches) else []
            first_seq = self.forward.seq
        else:
            interactions = list(state.interactions)
            first_seq = self.forward.seq - len(interactions)
        if not interactions:
            return []
        rng = ctx.seeds.generator("backward-negatives", state.step)
        item_ids = list(world.items)
        tasks, lists = [], []
        n = min(self.settings.feedback_negatives, len(item_ids) - 1)
        for interaction in interactions:
            user = world.users[user_agent_id(interaction.user)]
            true = item_agent_id(interaction.item)
            seen = world.history.get(user.agent_id, set())
            negatives: list[str] = []
            tries = 0
            while len(negatives) < n and tries < 50 * n:
                tries += 1
                candidate = item_ids[int(rng.integers(len(item_ids)))]
                if candidate != true and candidate not in seen and candidate not in negatives:
                    negatives.append(candidate)
            order = rng.permutation(len(negatives) + 1)
            candidates = [([true, *negatives])[k] for k in order.tolist()]
            agents = [world.items[c] for c in candidates]
            popularity = [self.forward.popularity(a) for a in agents]
            trend, recent = world.trend_of(user.agent_id), world.recent_of(user)
            tasks.append(RankTask(user, agents, popularity, trend, recent))
            lists.append(candidates)
        outcomes = await ctx.brain.rank(tasks)
        feedback, rows = [], []
        for k, (interaction, candidates, outcome) in enumerate(
            zip(interactions, lists, outcomes, strict=True)
        ):
            fb = Feedback(
                step=state.step,
                seq=first_seq + k,
                user_id=user_agent_id(interaction.user),
                true_item=item_agent_id(interaction.item),
                candidates=tuple(candidates),
                scores=tuple(float(s) for s in outcome.scores),
            )
            feedback.append(fb)
            rows.append(
                {
                    "run_id": ctx.run_id,
                    "step": state.step,
                    "split": "feedback",
                    "model": "recnet",
                    "user_id": fb.user_id,
                    "true_item": fb.true_item,
                    "ranking_json": json.dumps([fb.candidates[i] for i in fb.order]),
                    "scores_json": json.dumps([round(s, 6) for s in fb.scores]),
                    "rank": fb.rank,
                    "reasoning": outcome.reasoning
                    or f"feedback on interaction seq {fb.seq}: reward L={fb.reward:.0f}, "
                    f"1/rank={fb.rank_signal:.3f}",
                }
            )
        ctx.store.add("predictions", rows)
        return feedback

    def select(self, feedback: list[Feedback], step: int) -> list[Feedback]:
        """All predictions, the wrong ones, or a seeded sample of ``sample_size``."""
        how = self.settings.select
        if how == "all":
            return list(feedback)
        if how == "errors":
            return [f for f in feedback if f.reward == 0.0]
        if len(feedback) <= self.settings.sample_size:
            return list(feedback)
        rng = self.ctx.seeds.generator("backward-select", step)
        keep = sorted(rng.choice(len(feedback), self.settings.sample_size, replace=False).tolist())
        return [feedback[k] for k in keep]

    # 2. gradient -------------------------------------------------------------------------------
    def gradient_input(self, fb: Feedback) -> GradientInput:
        """What the counterfactual gradient needs to know about one prediction."""
        world, log = self.world, self.log
        user = world.users[fb.user_id]
        rival_id = fb.rival
        true, rival = world.items[fb.true_item], world.items[rival_id]
        parts: dict[str, dict[str, Weights]] = {}
        for side, agent in (("user", user), ("true", true), ("rival", rival)):
            if side == "rival" and rival_id == fb.true_item:
                continue
            found = log.router_parts(agent.agent_id, agent.propagated)
            parts[side] = {r: p for r, p in found.items() if r in world.routers}
        missed, messages = log.missed_part(user.agent_id, user.propagated, user.original)
        taken = [
            (r, e.message)
            for r, e in log.received(user.agent_id).items()
            if e.decision == "accepted" and e.share > 0
        ]
        relevance = user.filters.relevance_of
        return GradientInput(
            feedback=fb,
            user=Side(user.original, user.propagated),
            true=Side(true.original, true.propagated, self.forward.popularity(true)),
            rival=Side(rival.original, rival.propagated, self.forward.popularity(rival)),
            rival_id=rival_id,
            router_parts=parts,
            missed=missed,
            missed_messages=tuple(messages),
            accepted_scores={r: m.score for r, m in taken},
            rule_ids=tuple(r.rule_id for r in user.filters.rules),
            accepted_relevance={r: relevance(m, user.original) for r, m in taken},
            missed_relevance=tuple(relevance(e.message, user.original) for e in messages),
        )

    async def gradient(self, selected: list[Feedback], stats: RoundStats) -> list[Gradient]:
        """One gradient operation per selected prediction; ``gradients`` rows."""
        chosen = []
        for fb in selected:
            if not self._spend(stats, "gradient"):
                break
            chosen.append(fb)
        judged = await self.critic.judge([self.gradient_input(fb) for fb in chosen])
        out: list[Gradient] = []
        rows = []
        for fb, judgements in zip(chosen, judged, strict=True):
            if judgements is None:  # the critic's answer stayed unusable (an LLM's: in llm_calls)
                self.ctx.count("backward_gradient_failed")
                continue
            for judgement in judgements:
                g = Gradient(self.next_gradient, fb, judgement)
                self.next_gradient += 1
                out.append(g)
                stats.n_gradients += 1
                stats.n_negative += judgement.judgement == "negative"
                rows.append(gradient_row(self.ctx.run_id, g))
        self.ctx.store.add("gradients", rows)
        return out

    # 3. optimize -------------------------------------------------------------------------------
    async def plan_clients(
        self, groups: Mapping[ModuleKey, list[Gradient]], stats: RoundStats, step: int
    ) -> list[Planned]:
        """One edit per user module the critic wants to change (propagated profile, filter
        memory), each paid from the budget before the critic is asked."""
        jobs: list[tuple[ClientJob, list[Gradient]]] = []
        users = sorted(
            {t for (m, t) in groups if m in ("propagated_profile", "filter_memory")},
            key=self.world.client_position.__getitem__,
        )
        for user_id in users:
            if stats.skipped is not None:
                break  # the backward budget is spent
            agent = self.world.users[user_id]
            profile = groups.get(("propagated_profile", user_id), [])
            filters = groups.get(("filter_memory", user_id), [])
            for module, gradients in self.critic.client_modules(profile, filters, self.filters_on):
                if not self._spend(stats, "optimize"):
                    break
                judgements = [g.judgement for g in gradients]
                jobs.append((ClientJob(agent, module, judgements, step), gradients))
        edits = await self.critic.edit_clients([job for job, _ in jobs])
        planned: list[Planned] = []
        for (job, gradients), edit in zip(jobs, edits, strict=True):
            if edit is None:
                continue
            if not isinstance(edit, FilterRewrite):
                planned.append(self.planner.profile(job.agent, edit, gradients, step))
                continue
            try:
                planned.append(self.planner.filters(job.agent, edit, gradients, step))
            except ValueError as exc:  # e.g. an added rule beyond max_rules
                self.ctx.count("backward_optimize_failed")
                log.warning("optimize of %s's filter memory not applied: %s", job.agent, exc)
        return planned

    async def plan_routers(
        self, groups: Mapping[ModuleKey, list[Gradient]], stats: RoundStats, step: int
    ) -> list[Planned]:
        """Rewrite/τ/split/merge per router the critic decides on, keeping K within bounds and
        no router changed twice; then merges of near-duplicates (no critic needed)."""
        world, settings = self.world, self.optimizer
        judged = {
            t: [g.judgement for g in gs]
            for (m, t), gs in groups.items()
            if m == "router" and t in world.routers
        }
        k = len(world.routers)
        jobs: list[RouterJob] = []
        exhausted = False
        for router_id in routers_to_optimize(judged, settings):
            if not self._spend(stats, "optimize"):
                exhausted = True
                break
            jobs.append(RouterJob(self._router_state(router_id), judged[router_id], step))
        decisions = await self.critic.decide_routers(jobs, k)
        planned: list[Planned] = []
        busy: set[str] = set()
        for job, decision in zip(jobs, decisions, strict=True):
            if decision is None or busy & {decision.router_id, decision.partner}:
                continue  # nothing to do, or a router another decision of this round changes
            if decision.op == "split" and k >= settings.max_routers:
                continue
            if decision.op == "merge" and k - 1 < settings.min_routers:
                continue
            k += {"split": 1, "merge": -1}.get(decision.op, 0)
            busy.update(r for r in (decision.router_id, decision.partner) if r)
            gradients = groups[("router", job.state.router_id)]
            planned.append(self.planner.router(decision, gradients, step))
        if exhausted:
            return planned
        pairs = router_ops.near_duplicates(world, settings.merge_similarity)
        for decision in plan_merges(pairs, k, settings, busy):
            if not self._spend(stats, "optimize"):
                break
            planned.append(self.planner.router(decision, [], step))
        return planned

    def _router_state(self, router_id: str) -> RouterState:
        world = self.world
        router = world.routers[router_id]
        return RouterState(
            router_id,
            dict(router.profile),
            router.tau,
            len(world.members(router_id)),
            router_ops.spread(world, router_id),
        )

    # safeguard ---------------------------------------------------------------------------------
    async def _batch(self, step: int, planned: list[Planned], stats: RoundStats) -> None:
        """Apply ``planned`` together through the safeguard; record what became of it."""
        if not planned:
            return
        planned, verdict = await self.safeguard.apply(step, planned)
        if planned:
            self._record(step, planned, verdict, stats)

    def _record(
        self, step: int, planned: list[Planned], verdict: Verdict, stats: RoundStats
    ) -> None:
        batch = self.next_batch
        self.next_batch += 1
        settings = self.ctx.scenario.backward
        kept, valid_before, valid_after = verdict.kept, verdict.valid_before, verdict.valid_after
        reason = validation_reason(
            kept, valid_before, valid_after, settings.epsilon,
            standard_errors=verdict.standard_errors, z=settings.rollback_z,
        )  # fmt: skip
        rows = []
        for p in planned:
            p.optimization_id = self.next_optimization
            self.next_optimization += 1
            rows.append(
                {
                    "run_id": self.ctx.run_id,
                    "optimization_id": p.optimization_id,
                    "step": step,
                    "batch": batch,
                    "module": p.module,
                    "target_id": p.target_id,
                    "operation": p.operation,
                    "gradient_ids_json": json.dumps([g.gradient_id for g in p.gradients]),
                    "before_json": json.dumps(p.before),
                    "after_json": json.dumps(p.after),
                    "status": "kept" if kept else "rolled_back",
                    "valid_before": round(valid_before, 6),
                    "valid_after": round(valid_after, 6),
                    "reason": reason,
                }
            )
        self.ctx.store.add("optimizations", rows)
        for p in planned:
            if p.trace is not None:
                p.trace(kept)
        stats.n_optimizations += len(planned)
        if kept:
            stats.n_kept += len(planned)
        else:
            stats.n_rolled_back += len(planned)


class PreparedData(Protocol):
    """What the backward phase reads of the runner's prepared data."""

    valid_candidates: CandidateSet
    split: Split
    batches: Sequence[Sequence[Interaction]]


def make_backward_hook(
    ctx: RunContext, world: World, prepared: PreparedData, forward: ForwardPhase
) -> BackwardPhase:
    """The loop hook (called by ``recnet.runner``): a ``BackwardPhase`` on ``prepared``'s
    validation lists, subsampled to ``backward.validation_users`` with a seeded generator."""
    valid: CandidateSet = dict(prepared.valid_candidates)
    held = prepared.split.held_out("valid")
    limit = ctx.scenario.backward.validation_users
    if limit is not None and limit < len(valid):
        users = sorted(valid)
        rng = ctx.seeds.generator("backward-valid")
        keep = sorted(rng.choice(len(users), limit, replace=False).tolist())
        valid = {users[k]: valid[users[k]] for k in keep}
    truth = {u: held[u].item for u in valid}
    return BackwardPhase(ctx, world, forward, valid, truth, prepared.batches)

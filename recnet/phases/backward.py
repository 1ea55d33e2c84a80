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
   true item or the rival (offline: counterfactual, ``recnet.brain.credit``; LLM brain: the
   ``gradient`` template, ``recnet.brain.llm_backward``). Gradients are ``gradients`` rows.
3. *Optimize* — judgements are batched per module and each module is optimised once (offline:
   ``recnet.brain.optimizer``; LLM brain: one ``optimize`` call per module, sent concurrently), in
   two validated batches: clients (propagated profiles, filter rules) and routers (rewrite, τ,
   split, merge).

Safeguard: before a batch is applied the touched state is captured (``WorldSnapshot``); after it,
validation NDCG@10 on the validation candidates is recomputed and the batch is rolled back exactly
when it dropped by more than ``backward.epsilon``. Filter rules and routers act through future
propagation, so validation *probes* it: the touched routers multicast once and the touched
clients re-merge their recent messages (through the brain, nothing kept), before and after the
change, and the two probed states are compared. Validation scores with the offline formula and
probes with the offline merge for every brain, so with an LLM brain it costs no calls (it is a
proxy for the LLM's ranking). Budget: gradient and optimize operations count against
``backward.max_calls``; once spent, the rest is skipped and recorded.

The contributions the gradient needs (which routers' messages each client accepted or rejected)
are recorded from every merge of the forward phase by a ``ContributionLog``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from recnet.brain.base import Brain, MergeOutcome, MergeTask, RankTask
from recnet.brain.credit import (
    ContributionLog,
    Feedback,
    GradientInput,
    ModuleJudgement,
    OfflineScorer,
    ProfileIndex,
    Side,
    SparseProfile,
    counterfactual_gradient,
)
from recnet.brain.llm_backward import (
    Contributor,
    GradientRequest,
    LLMBackward,
    OptimizeRequest,
    assign_texts,
    client_request,
    filter_rewrite_from,
    profile_rewrite_from,
    router_decision_from,
    router_request,
)
from recnet.brain.offline import OfflineBrain
from recnet.brain.optimizer import (
    FilterRewrite,
    ModuleKey,
    OptimizerSettings,
    ProfileRewrite,
    RouterDecision,
    RouterState,
    apply_rule_edits,
    net,
    optimize_filters,
    optimize_profile,
    optimize_router,
    plan_merges,
    routers_to_optimize,
)
from recnet.context import RunContext
from recnet.data.types import Interaction
from recnet.eval.metrics import rank_of_true
from recnet.eval.protocol import CandidateSet, true_index
from recnet.phases.forward import ForwardPhase, StepState, profile_row, router_version_row
from recnet.world import router_ops
from recnet.world.agents import ClientAgent, item_agent_id, user_agent_id
from recnet.world.buffer import RouterMessage
from recnet.world.profile import Weights
from recnet.world.routing import select_recipients
from recnet.world.rules import FilterMemory
from recnet.world.snapshot import WorldSnapshot
from recnet.world.world import World

log = logging.getLogger(__name__)
MergeFn = Callable[[Sequence[MergeTask]], Awaitable[list[MergeOutcome]]]
NDCG_K = 10


@dataclass
class Gradient:
    """A judgement with its id and the prediction it came from."""

    gradient_id: int
    feedback: Feedback
    judgement: ModuleJudgement


@dataclass
class Planned:
    """One module optimisation waiting for its batch's validation."""

    module: str
    target_id: str
    operation: str
    gradients: list[Gradient]
    before: dict[str, object]
    apply: Callable[[], dict[str, object]]  # applies it; returns the "after" description
    routers: tuple[str, ...] = ()  # routers it changes (as they are before)
    after: dict[str, object] = field(default_factory=dict)
    trace: Callable[[bool], None] | None = None  # writes its version rows once kept/rolled back
    optimization_id: int = 0


@dataclass
class RoundStats:
    n_gradients: int = 0
    n_negative: int = 0
    n_optimizations: int = 0
    n_kept: int = 0
    n_rolled_back: int = 0
    calls: int = 0
    skipped: str | None = None


def record_merges(brain: Brain, log: ContributionLog) -> MergeFn:
    """Feed ``log`` from every merge the brain performs; return the unrecorded merge.

    The forward phase does not hand its merge decisions to the backward phase (StepState has no
    field for them), so the brain's ``merge`` is wrapped on this instance. The returned function
    is the original one: validation probes use it, so probes never enter the log.
    """
    inner: MergeFn = brain.merge

    async def merge(tasks: Sequence[MergeTask]) -> list[MergeOutcome]:
        outcomes = await inner(tasks)
        for task, outcome in zip(tasks, outcomes, strict=True):
            log.observe(task.client.agent_id, task.messages, outcome.decisions)
        return outcomes

    brain.merge = merge  # type: ignore[method-assign]
    return inner


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
        self.scorer = OfflineScorer(
            scenario.interaction.propagated_weight, scenario.interaction.popularity_weight
        )
        self.log = ContributionLog(scenario.propagation.merge_damping)
        self.merge = record_merges(ctx.brain, self.log)
        # With an LLM brain, gradient and optimize are LLM calls, while validation probes merge
        # with the offline brain's executable rules (free, deterministic; see the module doc).
        self.llm = LLMBackward(ctx.brain) if ctx.brain.kind == "llm" else None  # type: ignore[arg-type]
        if self.llm is not None:
            self.merge = OfflineBrain(scenario).merge
        self.filters_on = getattr(scenario.world.filters, "enabled", True)
        self.batches = batches  # the training stream by step (feedback="next" reads ahead)
        self.valid = valid  # user → candidates (validation lists)
        self.valid_items = valid_items  # user → the true validation item
        self._valid_ids = {u: [item_agent_id(i) for i in c] for u, c in valid.items()}
        self._index = ProfileIndex()
        # validation items as sparse vectors, with the profile maps they were built from
        self._item_forms: dict[str, tuple[Weights, Weights, tuple[float, ...], SparseProfile]] = {}
        self.item_users: dict[str, list[str]] = {}
        for user, items in valid.items():
            for item in items:
                self.item_users.setdefault(item_agent_id(item), []).append(user)
        store, run_id = ctx.store, ctx.run_id
        self.next_gradient = store.count("gradients", run_id) + 1
        self.next_optimization = store.count("optimizations", run_id) + 1
        self.next_operation = store.count("router_operations", run_id) + 1
        self.next_batch = len({r["batch"] for r in store.read("optimizations", run_id)}) + 1
        self.calls = sum(r["calls"] for r in store.read("backward_steps", run_id))

    # checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict[str, object]:
        """What a checkpoint must keep to resume identically (ids are re-read from the trace)."""
        return {"log": self.log.clients, "calls": self.calls}

    def load_state(self, state: Mapping[str, object]) -> None:
        self.log.clients = state["log"]  # type: ignore[assignment]
        self.calls = int(state["calls"])  # type: ignore[call-overload]

    # the hook ----------------------------------------------------------------------------------
    async def __call__(self, state: StepState) -> None:
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
        if self.llm is None:  # an LLM brain counts its calls (and their tokens) itself
            self.ctx.brain.operations.add(operation)
        return True

    async def run(self, state: StepState) -> RoundStats:
        started = self.ctx.clock()
        stats = RoundStats()
        self._base = None  # the forward step changed profiles
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
            tasks.append(RankTask(user, agents, [self.forward.popularity(a) for a in agents]))
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
        accepted = {
            r: e.message.score
            for r, e in log.received(user.agent_id).items()
            if e.decision == "accepted" and e.share > 0
        }
        return GradientInput(
            feedback=fb,
            user=Side(user.original, user.propagated),
            true=Side(true.original, true.propagated, self.forward.popularity(true)),
            rival=Side(rival.original, rival.propagated, self.forward.popularity(rival)),
            rival_id=rival_id,
            router_parts=parts,
            missed=missed,
            missed_messages=tuple(messages),
            accepted_scores=accepted,
            rule_ids=tuple(r.rule_id for r in user.filters.rules),
        )

    async def gradient(self, selected: list[Feedback], stats: RoundStats) -> list[Gradient]:
        """One gradient operation per selected prediction; ``gradients`` rows."""
        chosen = []
        for fb in selected:
            if not self._spend(stats, "gradient"):
                break
            chosen.append(fb)
        inputs = [self.gradient_input(fb) for fb in chosen]
        if self.llm is None:
            judged: list[list[ModuleJudgement] | None] = [
                counterfactual_gradient(task, self.scorer, self.settings.tolerance)
                for task in inputs
            ]
        else:
            judged = await self.llm.gradient([self.gradient_request(t) for t in inputs])
        out: list[Gradient] = []
        rows = []
        for fb, judgements in zip(chosen, judged, strict=True):
            if judgements is None:  # the LLM's answer stayed unusable (recorded in llm_calls)
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

    def gradient_request(self, task: GradientInput) -> GradientRequest:
        """The LLM gradient's view of one prediction: the agents and every module involved."""
        world, fb = self.world, task.feedback
        sides = {"user": "the user", "true": "the true item", "rival": "the item ranked above it"}
        reached: dict[str, list[str]] = {}
        for side, parts in task.router_parts.items():
            for router_id in parts:
                reached.setdefault(router_id, []).append(sides[side])
        contributors = [
            Contributor(world.routers[r], " and ".join(how), len(world.members(r)))
            for r, how in sorted(reached.items(), key=lambda kv: _number(kv[0]))
        ]
        return GradientRequest(
            feedback=fb,
            user=world.users[fb.user_id],
            candidates=[world.items[c] for c in fb.candidates],
            contributors=contributors,
            rejected=[e.message for e in task.missed_messages],
            step=fb.step,
        )

    # 3. optimize: clients ----------------------------------------------------------------------
    async def plan_clients(
        self, groups: Mapping[ModuleKey, list[Gradient]], stats: RoundStats, step: int
    ) -> list[Planned]:
        """One optimisation per user's propagated profile and per user's filter memory."""
        if self.llm is not None:
            return await self._plan_clients_llm(groups, stats, step)
        planned: list[Planned] = []
        users = sorted(
            {t for (m, t) in groups if m in ("propagated_profile", "filter_memory")},
            key=self.world.client_position.__getitem__,
        )
        for user_id in users:
            profile_g = groups.get(("propagated_profile", user_id), [])
            filter_g = groups.get(("filter_memory", user_id), [])
            agent = self.world.users[user_id]
            if _any_signal(profile_g):
                rewrite = optimize_profile(
                    user_id, agent.propagated, [g.judgement for g in profile_g], self.optimizer
                )
                if not self._spend(stats, "optimize"):
                    break
                if rewrite is not None:
                    planned.append(self._plan_profile(agent, rewrite, profile_g))
            if self.filters_on and _any_signal(profile_g + filter_g):
                edits = optimize_filters(
                    user_id,
                    agent.filters,
                    [g.judgement for g in profile_g + filter_g],
                    self.optimizer,
                )
                if not self._spend(stats, "optimize"):
                    break
                if edits is not None:
                    planned.append(self._plan_filters(agent, edits, profile_g + filter_g))
        return planned

    async def _plan_clients_llm(
        self, groups: Mapping[ModuleKey, list[Gradient]], stats: RoundStats, step: int
    ) -> list[Planned]:
        """The LLM path: one ``optimize`` call per module with signal, sent concurrently."""
        assert self.llm is not None
        jobs: list[tuple[ClientAgent, list[Gradient], OptimizeRequest]] = []
        users = sorted(
            {t for (m, t) in groups if m in ("propagated_profile", "filter_memory")},
            key=self.world.client_position.__getitem__,
        )
        modules = (
            ("propagated_profile", "filter_memory") if self.filters_on else ("propagated_profile",)
        )
        for user_id in users:
            if stats.skipped is not None:
                break  # the backward budget is spent
            agent = self.world.users[user_id]
            for module in modules:
                gradients = groups.get((module, user_id), [])
                if not _any_signal(gradients) or not self._spend(stats, "optimize"):
                    continue
                judgements = [g.judgement for g in gradients]
                jobs.append((agent, gradients, client_request(agent, module, judgements, step)))
        answers = await self.llm.optimize([request for _, _, request in jobs])
        planned: list[Planned] = []
        for (agent, gradients, request), answer in zip(jobs, answers, strict=True):
            if answer is None:
                self.ctx.count("backward_optimize_failed")
                continue
            if request.module == "propagated_profile":
                rewrite = profile_rewrite_from(answer, agent, self.optimizer)
                if rewrite is not None:
                    planned.append(self._plan_profile(agent, rewrite, gradients))
                continue
            edits = filter_rewrite_from(answer, agent.filters, agent.agent_id)
            if edits is None:
                continue
            try:
                planned.append(self._plan_filters(agent, edits, gradients))
            except ValueError as exc:  # e.g. an added rule beyond max_rules
                self.ctx.count("backward_optimize_failed")
                log.warning("optimize of %s's filter memory not applied: %s", agent.agent_id, exc)
        return planned

    def _plan_profile(
        self, agent: ClientAgent, rewrite: ProfileRewrite, gradients: list[Gradient]
    ) -> Planned:
        before = {"propagated": _rounded(agent.propagated)}

        def apply() -> dict[str, object]:
            agent.propagated = dict(rewrite.weights)
            if rewrite.text is not None:
                agent.propagated_text = rewrite.text
            return {"propagated": _rounded(agent.propagated), "dampened": list(rewrite.dampened)}

        planned = Planned("propagated_profile", agent.agent_id, "rewrite", gradients, before, apply)

        def trace(kept: bool) -> None:
            if kept and self.ctx.scenario.trace.profiles == "changed":
                self.ctx.store.add(
                    "profile_versions",
                    [profile_row(self.ctx.run_id, agent, self._step, "propagated", "optimize")],
                )

        planned.trace = trace
        return planned

    def _plan_filters(
        self, agent: ClientAgent, rewrite: FilterRewrite, gradients: list[Gradient]
    ) -> Planned:
        old = agent.filters
        new = apply_rule_edits(old, rewrite.edits, owner=agent.agent_id)
        before = {"rules": _rules_json(old), "reason": rewrite.reason}

        def apply() -> dict[str, object]:
            agent.filters = new
            return {
                "rules": _rules_json(new),
                "edits": [
                    {"op": e.op, "rule_id": e.rule_id, "params": dict(e.params)}
                    for e in rewrite.edits
                ],
            }

        planned = Planned("filter_memory", agent.agent_id, "rules", gradients, before, apply)

        def trace(kept: bool) -> None:
            if kept:
                gid = _cause(gradients, self.optimizer.tolerance)
                rows = rule_version_rows(self.ctx.run_id, agent.agent_id, self._step, old, new, gid)
                self.ctx.store.add("filter_rule_versions", rows)

        planned.trace = trace
        return planned

    # 3. optimize: routers ----------------------------------------------------------------------
    async def plan_routers(
        self, groups: Mapping[ModuleKey, list[Gradient]], stats: RoundStats, step: int
    ) -> list[Planned]:
        """Split/rewrite/τ per router with gradients, then merges of near-duplicates."""
        if self.llm is not None:
            return await self._plan_routers_llm(groups, stats, step)
        world = self.world
        planned: list[Planned] = []
        k = len(world.routers)
        busy: set[str] = set()
        judged = self._router_judgements(groups)
        for router_id in routers_to_optimize(judged, self.optimizer):
            gradients = groups[("router", router_id)]
            state = self._router_state(router_id)
            if not self._spend(stats, "optimize"):
                return planned
            decision = optimize_router(state, [g.judgement for g in gradients], self.optimizer, k)
            if decision is None:
                continue
            k += decision.op == "split"
            busy.add(router_id)
            planned.append(self._plan_router(decision, gradients, step))
        pairs = router_ops.near_duplicates(world, self.optimizer.merge_similarity)
        for decision in plan_merges(pairs, k, self.optimizer, busy):
            if not self._spend(stats, "optimize"):
                break
            planned.append(self._plan_router(decision, [], step))
        return planned

    def _router_judgements(
        self, groups: Mapping[ModuleKey, list[Gradient]]
    ) -> dict[str, list[ModuleJudgement]]:
        """Each still-existing router's judgements of this round."""
        return {
            t: [g.judgement for g in gs]
            for (m, t), gs in groups.items()
            if m == "router" and t in self.world.routers
        }

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

    async def _plan_routers_llm(
        self, groups: Mapping[ModuleKey, list[Gradient]], stats: RoundStats, step: int
    ) -> list[Planned]:
        """The LLM path: one ``optimize`` call per router chosen by ``routers_to_optimize``;
        near-duplicates are then merged as in the offline path (no call)."""
        assert self.llm is not None
        world, settings = self.world, self.optimizer
        judged = self._router_judgements(groups)
        k = len(world.routers)
        jobs: list[tuple[RouterState, list[Gradient], OptimizeRequest]] = []
        for router_id in routers_to_optimize(judged, settings):
            if not self._spend(stats, "optimize"):
                break
            router, state = world.routers[router_id], self._router_state(router_id)
            partners = [world.routers[r] for r in router_ops.most_similar(world, router_id, 3)]
            request = router_request(router, state, settings, k, partners, judged[router_id], step)
            jobs.append((state, groups[("router", router_id)], request))
        answers = await self.llm.optimize([request for _, _, request in jobs])
        planned: list[Planned] = []
        busy: set[str] = set()
        for (state, gradients, request), answer in zip(jobs, answers, strict=True):
            if answer is None:
                self.ctx.count("backward_optimize_failed")
                continue
            decision = router_decision_from(answer, state, settings, request.partners)
            if decision is None or busy & {decision.router_id, decision.partner}:
                continue  # nothing to do, or a router another decision of this round changes
            if decision.op == "split" and k >= settings.max_routers:
                continue
            if decision.op == "merge" and k - 1 < settings.min_routers:
                continue
            k += {"split": 1, "merge": -1}.get(decision.op, 0)
            busy.update(r for r in (decision.router_id, decision.partner) if r)
            planned.append(self._plan_router(decision, gradients, step))
        pairs = router_ops.near_duplicates(world, settings.merge_similarity)
        for decision in plan_merges(pairs, k, settings, busy):
            planned.append(self._plan_router(decision, [], step))
        return planned

    def _plan_router(
        self, decision: RouterDecision, gradients: list[Gradient], step: int
    ) -> Planned:
        world = self.world
        ids = [decision.router_id] + ([decision.partner] if decision.partner else [])
        before: dict[str, object] = {r: router_json(world, r) for r in ids}
        before["reason"] = decision.reason
        result: list[router_ops.RouterChange] = []

        def apply() -> dict[str, object]:
            size = self.optimizer.router_profile_size
            if decision.op == "split":
                rng = self.ctx.seeds.generator("backward-split", step, _number(decision.router_id))
                change = router_ops.split(
                    world,
                    decision.router_id,
                    rng,
                    step=step,
                    profile_size=size,
                    min_members=self.optimizer.min_members_split,
                )
            elif decision.op == "merge":
                assert decision.partner is not None
                change = router_ops.merge(
                    world, decision.router_id, decision.partner, step=step, profile_size=size
                )
            else:
                router = world.routers[decision.router_id]
                if decision.tau is not None:
                    router.tau = decision.tau
                if decision.profile is not None:
                    text = decision.text if decision.text is not None else router.text
                    change = router_ops.rewrite(world, decision.router_id, decision.profile, text)
                else:
                    change = router_ops.set_tau(world, decision.router_id, router.tau)
                if decision.op == "rewrite_tau":
                    change = router_ops.RouterChange("rewrite_tau", change.removed, change.created)
            if change is None:
                return {"unchanged": True}
            if decision.op == "split" and decision.parts:
                profiles = [world.routers[r].profile for r in change.created]
                texts = assign_texts(profiles, decision.parts)
                for r, text in zip(change.created, texts, strict=True):
                    world.routers[r].text = text
            result.append(change)
            return {r: router_json(world, r) for r in change.created}

        planned = Planned(
            "router", decision.router_id, decision.op, gradients, before, apply, tuple(ids)
        )

        def trace(kept: bool) -> None:
            if not result:
                return
            change = result[0]
            gid = _cause(gradients, self.optimizer.tolerance)
            self.ctx.store.add(
                "router_operations",
                [
                    {
                        "run_id": self.ctx.run_id,
                        "operation_id": self.next_operation,
                        "step": step,
                        "optimization_id": planned.optimization_id,
                        "operation": change.operation,
                        "router_ids_json": json.dumps(list(change.removed)),
                        "result_ids_json": json.dumps(list(change.created)),
                        "before_json": json.dumps(planned.before),
                        "after_json": json.dumps(planned.after),
                        "gradient_id": gid,
                        "status": "kept" if kept else "rolled_back",
                    }
                ],
            )
            self.next_operation += 1
            if kept:
                self._trace_router_change(change, step, gid)

        planned.trace = trace
        return planned

    def _trace_router_change(
        self, change: router_ops.RouterChange, step: int, gradient_id: int | None
    ) -> None:
        ctx, world = self.ctx, self.world
        if change.operation in ("split", "merge"):
            ctx.store.add(
                "agents",
                [
                    {
                        "run_id": ctx.run_id,
                        "agent_id": r,
                        "kind": "router",
                        "label": world.routers[r].label() if r in world.routers else None,
                        "created_step": step,
                    }
                    for r in change.created
                ],
            )
            ctx.store.add(
                "routers",
                [
                    {
                        "run_id": ctx.run_id,
                        "router_id": r,
                        "created_step": step,
                        "retired_step": None,
                        "origin": world.routers[r].origin,
                    }
                    for r in change.created
                ],
            )
            rows = [
                router_version_row(
                    ctx.run_id,
                    step,
                    world.routers[r],
                    world,
                    change.operation,
                    parent_version=None,
                    gradient_id=gradient_id,
                )
                for r in change.created
            ]
        else:
            rows = [
                router_version_row(
                    ctx.run_id, step, world.routers[r], world, "optimize", gradient_id=gradient_id
                )
                for r in change.created
            ]
        ctx.store.add("router_versions", rows)

    # safeguard ---------------------------------------------------------------------------------
    async def _batch(self, step: int, planned: list[Planned], stats: RoundStats) -> None:
        """Apply ``planned`` together; keep it unless validation NDCG drops by > epsilon."""
        if not planned:
            return
        self._step = step
        world = self.world
        clients = {p.target_id for p in planned if p.module != "router"}
        probed = {p.target_id for p in planned if p.module == "filter_memory"}
        if self._base is None:
            self._base = await self._gains(sorted(self.valid), {})
        base = self._base
        has_routers = any(p.module == "router" for p in planned)
        snapshot = WorldSnapshot.capture(world, clients, vectors=False, routers=has_routers)
        before_routers = {r for p in planned for r in p.routers}
        probe_before = await self._probe(step, before_routers, probed)
        before_profiles = {c: state.propagated for c, state in snapshot.clients.items()}
        before_profiles.update(probe_before)
        for p in planned:
            p.after = p.apply()
        planned = [p for p in planned if not p.after.get("unchanged")]  # e.g. a refused split
        if not planned:
            return
        after_routers = {r for p in planned for r in p.after if r in world.routers}
        probe_after = await self._probe(step, after_routers, probed)
        users = self._affected(set(before_profiles) | set(probe_after))
        before = await self._gains(users, before_profiles)
        after = await self._gains(users, probe_after)
        n = max(len(self.valid), 1)
        total = sum(base.values()) - sum(base[u] for u in users)
        valid_before = (total + sum(before.values())) / n
        valid_after = (total + sum(after.values())) / n
        kept = valid_after >= valid_before - self.settings.epsilon
        if kept:
            rewritten = self._affected(p.target_id for p in planned if p.module != "router")
            base.update(await self._gains(rewritten, {}))
        else:
            used = world._next_router_number
            snapshot.restore(world)
            world._next_router_number = used  # ids of rolled-back routers are never reused
        self._record(step, planned, kept, valid_before, valid_after, stats)

    def _record(
        self,
        step: int,
        planned: list[Planned],
        kept: bool,
        valid_before: float,
        valid_after: float,
        stats: RoundStats,
    ) -> None:
        batch = self.next_batch
        self.next_batch += 1
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

    def _affected(self, clients: Iterable[str]) -> list[str]:
        """Validation users whose ranking depends on any of ``clients``' profiles."""
        users: set[str] = set()
        for agent_id in clients:
            if agent_id in self.world.users:
                key = self.world.users[agent_id].key
                if key in self.valid:
                    users.add(key)
            else:
                users.update(self.item_users.get(agent_id, ()))
        return sorted(users)

    async def _probe(
        self, step: int, routers: Iterable[str], clients: Iterable[str]
    ) -> dict[str, Weights]:
        """Propagated profiles after one hypothetical propagation: ``routers`` multicast once
        and ``clients`` re-merge their recent messages. Nothing in the world changes."""
        world = self.world
        inbox: dict[str, list[RouterMessage]] = {}
        settings = self.ctx.scenario.propagation
        top_k = settings.top_k if settings.routing == "top_k" else None
        for router_id in sorted(set(routers) & set(world.routers), key=_number):
            router = world.routers[router_id]
            positions, scores = select_recipients(
                world.client_vectors @ world.space.embed_weights(router.profile),
                tau=router.tau,
                max_recipients=settings.max_recipients,
                top_k=top_k,
            )
            snapshot = dict(router.profile)
            for position, score in zip(positions.tolist(), scores.tolist(), strict=True):
                client = world.clients[position]
                inbox.setdefault(client.agent_id, []).append(
                    RouterMessage(0, router_id, client.agent_id, step, score, snapshot, "")
                )
        for client_id in clients:
            recent = [e.message for e in self.log.received(client_id).values()]
            if recent:
                inbox.setdefault(client_id, []).extend(recent)
        if not inbox:
            return {}
        ids = sorted(inbox, key=world.client_position.__getitem__)
        tasks = [MergeTask(world.client(c), inbox[c], step) for c in ids]
        outcomes = await self.merge(tasks)
        return {
            c: (o.propagated.weights if o.propagated is not None else world.client(c).propagated)
            for c, o in zip(ids, outcomes, strict=True)
        }

    async def _gains(self, users: list[str], propagated: Mapping[str, Weights]) -> dict[str, float]:
        """NDCG@10 gains of ``users``' validation lists with ``propagated`` swapped in.

        Scored with ``OfflineScorer.score_lists`` (the offline brain's formula, vectorised, each
        effective profile built once) rather than ``brain.rank``.
        """
        if not users:
            return {}
        world, scorer, index = self.world, self.scorer, self._index

        def item_form(item_id: str) -> tuple[SparseProfile, float]:
            agent = world.items[item_id]
            prior = self.forward.popularity(agent)
            override = propagated.get(item_id)
            if override is not None:
                return index.sparse(scorer.effective(agent.original, override)), prior
            return self._cached_form(agent), prior

        def user_side(user: str) -> Side:
            agent = world.users[user_agent_id(user)]
            return Side(agent.original, propagated.get(agent.agent_id, agent.propagated))

        scores = self.scorer.score_lists(
            [user_side(u) for u in users], [self._valid_ids[u] for u in users], item_form, index
        )
        gains = {}
        for user, row in zip(users, scores, strict=True):
            candidates = self.valid[user]
            rank = rank_of_true(row, true_index(candidates, self.valid_items[user]))
            gains[user] = 1.0 / math.log2(rank + 1.0) if rank <= NDCG_K else 0.0
        return gains

    def _cached_form(self, agent: ClientAgent) -> SparseProfile:
        """An item's effective profile as a sparse vector, rebuilt only when its profiles changed.

        Phases replace profile maps rather than edit them; the cache holds the very map objects
        it was built from and also compares their sizes and sums, so an in-place edit is caught.
        """
        original, propagated = agent.original, agent.propagated
        cached = self._item_forms.get(agent.agent_id)
        if (
            cached is not None
            and cached[0] is original
            and cached[1] is propagated
            and cached[2]
            == (len(original), len(propagated), sum(original.values()), sum(propagated.values()))
        ):
            return cached[3]
        form = self._index.sparse(self.scorer.effective(original, propagated))
        fingerprint = (
            len(original),
            len(propagated),
            sum(original.values()),
            sum(propagated.values()),
        )
        self._item_forms[agent.agent_id] = (original, propagated, fingerprint, form)
        return form

    _step: int = -1
    _base: dict[str, float] | None = None  # this round's validation gains per user


# -- helpers --------------------------------------------------------------------------------------


def _number(router_id: str) -> int:
    return int(router_id.split(":")[1])


def _any_signal(gradients: Sequence[Gradient]) -> bool:
    return any(g.judgement.judgement != "neutral" for g in gradients)


def _cause(gradients: Sequence[Gradient], tolerance: float) -> int | None:
    """The gradient that caused an optimisation: the strongest one agreeing with the verdict."""
    if not gradients:
        return None
    verdict, _ = net([g.judgement for g in gradients], tolerance)
    agreeing = [g for g in gradients if g.judgement.judgement == verdict] or list(gradients)
    return max(agreeing, key=lambda g: (abs(g.judgement.effect or 0.0), -g.gradient_id)).gradient_id


def _rounded(weights: Mapping[str, float]) -> dict[str, float]:
    return {a: round(w, 5) for a, w in weights.items()}


def _rules_json(memory: FilterMemory) -> list[dict[str, object]]:
    return [
        {"rule_id": r.rule_id, "version": r.version, "text": r.text, "executable": r.executable()}
        for r in memory.rules
    ]


def router_json(world: World, router_id: str) -> dict[str, object]:
    router = world.routers[router_id]
    return {
        "router_id": router_id,
        "version": router.version,
        "tau": round(router.tau, 6),
        "n_members": len(world.members(router_id)),
        "profile": _rounded(router.profile),
    }


def gradient_row(run_id: str, g: Gradient) -> dict[str, object]:
    fb, j = g.feedback, g.judgement
    return {
        "run_id": run_id,
        "gradient_id": g.gradient_id,
        "step": fb.step,
        "seq": fb.seq,
        "user_id": fb.user_id,
        "true_item": fb.true_item,
        "chosen_item": fb.chosen,
        "rival_item": fb.rival,
        "reward": fb.reward,
        "rank": fb.rank,
        "module": j.module,
        "target_id": j.target_id,
        "judgement": j.judgement,
        "effect": None if j.effect is None else round(j.effect, 6),
        "reason": j.reason,
        "suggestion": j.suggestion,
    }


def rule_version_rows(
    run_id: str,
    agent_id: str,
    step: int,
    old: FilterMemory,
    new: FilterMemory,
    gradient_id: int | None,
) -> list[dict[str, object]]:
    """Rows for rules whose version or position changed, and for deleted rules."""
    before = {r.rule_id: (k, r) for k, r in enumerate(old.rules)}
    rows = []
    for position, rule in enumerate(new.rules):
        previous = before.get(rule.rule_id)
        if previous is not None and previous[1].version == rule.version and previous[0] == position:
            continue
        parent = previous[1].version if previous is not None else None
        rows.append(
            {
                "run_id": run_id,
                "agent_id": agent_id,
                "rule_id": rule.rule_id,
                "step": step,
                "version": rule.version,
                "parent_version": parent,
                "position": position,
                "text": rule.text,
                "executable_json": json.dumps(rule.executable()),
                "active": True,
                "reason": "optimize",
                "gradient_id": gradient_id,
            }
        )
    kept = {r.rule_id for r in new.rules}
    for rule_id, (position, rule) in before.items():
        if rule_id not in kept:
            rows.append(
                {
                    "run_id": run_id,
                    "agent_id": agent_id,
                    "rule_id": rule_id,
                    "step": step,
                    "version": rule.version,
                    "parent_version": rule.version,
                    "position": position,
                    "text": rule.text,
                    "executable_json": json.dumps(rule.executable()),
                    "active": False,
                    "reason": "optimize",
                    "gradient_id": gradient_id,
                }
            )
    return rows


def make_backward_hook(
    ctx: RunContext, world: World, prepared: object, forward: ForwardPhase
) -> Callable[[StepState], Awaitable[None]]:
    """The loop hook (called by ``recnet.runner``): a ``BackwardPhase`` on ``prepared``'s
    validation lists, subsampled to ``backward.validation_users`` with a seeded generator."""
    valid: CandidateSet = dict(prepared.valid_candidates)  # type: ignore[attr-defined]
    held = prepared.split.held_out("valid")  # type: ignore[attr-defined]
    limit = ctx.scenario.backward.validation_users
    if limit is not None and limit < len(valid):
        users = sorted(valid)
        rng = ctx.seeds.generator("backward-valid")
        keep = sorted(rng.choice(len(users), limit, replace=False).tolist())
        valid = {users[k]: valid[users[k]] for k in keep}
    truth = {u: held[u].item for u in valid}
    return BackwardPhase(ctx, world, forward, valid, truth, prepared.batches)  # type: ignore[attr-defined]

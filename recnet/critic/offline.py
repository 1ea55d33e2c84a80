"""The offline critic: counterfactual credit and rule-based edits (no LLM, deterministic).

Pipeline position: a ``recnet.critic.base.Critic`` registered as ``offline`` in
``recnet.registry.CRITICS``; the default critic of the offline brain. Judgements come from
``recnet.brain.credit.counterfactual_gradient`` (how far removing a module's contribution moves
the true item's score against the chosen one), edits from ``recnet.brain.optimizer``.
"""

from __future__ import annotations

from collections.abc import Sequence

from recnet.brain.credit import (
    GradientInput,
    ModuleJudgement,
    ModuleKind,
    OfflineScorer,
    counterfactual_gradient,
)
from recnet.brain.optimizer import (
    OptimizerSettings,
    RouterDecision,
    optimize_filters,
    optimize_profile,
    optimize_router,
)
from recnet.context import RunContext
from recnet.critic import base
from recnet.critic.base import ClientEdit, ClientJob, Gradient, RouterJob
from recnet.world.world import World


class OfflineCritic:
    """Counterfactual gradients and the rule-based optimizer; see the module docstring."""

    def __init__(self, ctx: RunContext, world: World, settings: OptimizerSettings) -> None:
        interaction = ctx.scenario.interaction
        self.ctx, self.settings = ctx, settings
        self.scorer = OfflineScorer(interaction.propagated_weight, interaction.popularity_weight)
        self.tolerance = ctx.scenario.backward.tolerance

    async def judge(self, inputs: Sequence[GradientInput]) -> list[list[ModuleJudgement] | None]:
        return [counterfactual_gradient(task, self.scorer, self.tolerance) for task in inputs]

    def client_modules(
        self, profile: list[Gradient], filters: list[Gradient], filters_on: bool
    ) -> list[tuple[ModuleKind, list[Gradient]]]:
        """The profile when its judgements say something; the filter memory when the profile's
        or the memory's do (a rule decides what the profile takes in)."""
        out: list[tuple[ModuleKind, list[Gradient]]] = []
        if base.any_signal(profile):
            out.append((base.PROFILE_MODULE, profile))
        if filters_on and base.any_signal(profile + filters):
            out.append((base.FILTER_MODULE, profile + filters))
        return out

    async def edit_clients(self, jobs: Sequence[ClientJob]) -> list[ClientEdit | None]:
        out: list[ClientEdit | None] = []
        for job in jobs:
            agent, judgements = job.agent, list(job.judgements)
            if job.module == base.PROFILE_MODULE:
                out.append(
                    optimize_profile(agent.agent_id, agent.propagated, judgements, self.settings)
                )
            else:
                out.append(
                    optimize_filters(agent.agent_id, agent.filters, judgements, self.settings)
                )
        return out

    async def decide_routers(
        self, jobs: Sequence[RouterJob], n_routers: int
    ) -> list[RouterDecision | None]:
        """Decisions in order; a split counts towards K for the routers after it."""
        out: list[RouterDecision | None] = []
        k = n_routers
        for job in jobs:
            decision = optimize_router(job.state, list(job.judgements), self.settings, k)
            k += decision is not None and decision.op == "split"
            out.append(decision)
        return out

    def spent(self, operation: str) -> None:
        self.ctx.brain.operations.add(operation)

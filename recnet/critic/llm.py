"""The LLM critic: the prompt pack's ``gradient`` and ``optimize`` templates.

Pipeline position: a ``recnet.critic.base.Critic`` registered as ``llm`` in
``recnet.registry.CRITICS``; the default critic of the LLM brain. Every call goes through the
brain's public ``ask`` (its backend, pack, stats, cache and trace hook); the prompts and the
parsing of answers are in ``recnet.brain.llm_backward``. A call whose answer stays unusable yields
None (counted as ``backward_optimize_failed``; the phase counts failed gradients).
"""

from __future__ import annotations

from collections.abc import Sequence

from recnet.brain.credit import NO_ADJUSTMENT, GradientInput, ModuleJudgement, ModuleKind
from recnet.brain.llm import Ask
from recnet.brain.llm_backward import (
    PHASE,
    Contributor,
    GradientRequest,
    OptimizeRequest,
    _distinct,
    _fits,
    _judges_each,
    client_request,
    filter_rewrite_from,
    judgements_from,
    module_blocks,
    profile_rewrite_from,
    router_decision_from,
    router_request,
)
from recnet.brain.llm_text import candidate_lines
from recnet.brain.optimizer import OptimizerSettings, RouterDecision, net
from recnet.context import RunContext
from recnet.critic.base import (
    FILTER_MODULE,
    PROFILE_MODULE,
    ClientEdit,
    ClientJob,
    Gradient,
    RouterJob,
    any_signal,
)
from recnet.llm.schemas import OptimizeOutput
from recnet.world import router_ops
from recnet.world.world import World

SIDES = {"user": "the user", "true": "the true item", "rival": "the item ranked above it"}


class LLMCritic:
    """Gradient and optimize calls through the run's LLM brain; see the module docstring."""

    def __init__(self, ctx: RunContext, world: World, settings: OptimizerSettings) -> None:
        self.ctx, self.world, self.settings = ctx, world, settings
        self.brain = ctx.brain  # used only through its public ``ask``

    # gradient ----------------------------------------------------------------------------------
    def request(self, task: GradientInput) -> GradientRequest:
        """The gradient's view of one prediction: the agents and every module involved."""
        world, fb = self.world, task.feedback
        reached: dict[str, list[str]] = {}
        for side, parts in task.router_parts.items():
            for router_id in parts:
                reached.setdefault(router_id, []).append(SIDES[side])
        contributors = [
            Contributor(world.routers[r], " and ".join(how), len(world.members(r)))
            for r, how in sorted(reached.items(), key=lambda kv: int(kv[0].split(":")[1]))
        ]
        return GradientRequest(
            feedback=fb,
            user=world.users[fb.user_id],
            candidates=[world.items[c] for c in fb.candidates],
            contributors=contributors,
            rejected=[e.message for e in task.missed_messages],
            step=fb.step,
        )

    async def judge(self, inputs: Sequence[GradientInput]) -> list[list[ModuleJudgement] | None]:
        requests = [self.request(task) for task in inputs]
        shown = [module_blocks(r) for r in requests]
        asks = [gradient_ask(r, blocks) for r, blocks in zip(requests, shown, strict=True)]
        results = await self.brain.ask(asks)
        return [
            judgements_from(result.value, list(blocks), request.user.agent_id)
            if result.ok
            else None
            for request, blocks, result in zip(requests, shown, results, strict=True)
        ]

    # optimize ----------------------------------------------------------------------------------
    def client_modules(
        self, profile: list[Gradient], filters: list[Gradient], filters_on: bool
    ) -> list[tuple[ModuleKind, list[Gradient]]]:
        """Each module judged non-neutrally, with its own judgements only."""
        modules = [(PROFILE_MODULE, profile)] + ([(FILTER_MODULE, filters)] if filters_on else [])
        return [(module, gradients) for module, gradients in modules if any_signal(gradients)]

    async def edit_clients(self, jobs: Sequence[ClientJob]) -> list[ClientEdit | None]:
        requests = [client_request(j.agent, j.module, j.judgements, j.step) for j in jobs]
        answers = await self.optimize(requests)
        out: list[ClientEdit | None] = []
        for job, answer in zip(jobs, answers, strict=True):
            if answer is None:
                out.append(None)
            elif job.module == PROFILE_MODULE:
                out.append(profile_rewrite_from(answer, job.agent, self.settings))
            else:
                out.append(filter_rewrite_from(answer, job.agent.filters, job.agent.agent_id))
        return out

    async def decide_routers(
        self, jobs: Sequence[RouterJob], n_routers: int
    ) -> list[RouterDecision | None]:
        world, settings = self.world, self.settings
        requests = []
        for job in jobs:
            router_id = job.state.router_id
            partners = [world.routers[r] for r in router_ops.most_similar(world, router_id, 3)]
            router = world.routers[router_id]
            requests.append(
                router_request(
                    router, job.state, settings, n_routers, partners, job.judgements, job.step
                )
            )
        answers = await self.optimize(requests)
        return [
            None
            if answer is None
            else router_decision_from(answer, job.state, settings, request.partners)
            for job, request, answer in zip(jobs, requests, answers, strict=True)
        ]

    async def optimize(self, requests: Sequence[OptimizeRequest]) -> list[OptimizeOutput | None]:
        """One validated edit per request; None (and a count) when the answer was unusable."""
        results = await self.brain.ask([optimize_ask(r) for r in requests])
        failed = sum(not r.ok for r in results)
        if failed:
            self.ctx.count("backward_optimize_failed", failed)
        return [r.value if r.ok else None for r in results]

    def spent(self, operation: str) -> None:
        """Nothing to add: the LLM brain counts its calls (and their tokens) itself."""


def gradient_ask(request: GradientRequest, modules: dict[str, str]) -> Ask:
    fb = request.feedback
    ranking = [fb.candidates[k] for k in fb.order]
    true = next(c for c in request.candidates if c.agent_id == fb.true_item)
    return Ask(
        "gradient",
        {
            "user_profile": request.user.profile_text(),
            "modules": "\n".join(modules.values()),
            "candidates": candidate_lines(list(request.candidates)),
            "predicted": f"{ranking[0]} (its ranking, best first: {', '.join(ranking)})",
            "true_item": f"{true.agent_id}: {true.profile_text()}",
        },
        agent_id=request.user.agent_id,
        step=request.step,
        phase=PHASE,
        validator=_judges_each(list(modules)),
    )


def optimize_ask(request: OptimizeRequest) -> Ask:
    verdict, _ = net(request.judgements, 0.0)
    reasons = _distinct(j.reason for j in request.judgements if j.judgement == verdict)
    suggestions = _distinct(
        j.suggestion
        for j in request.judgements
        if j.judgement == verdict and j.suggestion.strip().lower() != NO_ADJUSTMENT
    )
    return Ask(
        "optimize",
        {
            "module_kind": request.module,
            "module_id": request.target_id,
            "content": request.content,
            "judgement": f"{verdict} ({len(request.judgements)} prediction(s))",
            "reason": " / ".join(reasons) or "none given",
            "suggestion": " / ".join(suggestions) or NO_ADJUSTMENT,
            "allowed_operations": list(request.allowed),
        },
        agent_id=request.target_id,
        step=request.step,
        phase=PHASE,
        validator=_fits(request),
    )

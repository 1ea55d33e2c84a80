"""The ``Critic`` interface of the backward phase: judge the modules of predictions, propose edits.

Pipeline position: backward phase steps 2 (gradient) and 3 (optimize). The phase
(``recnet.phases.backward``) owns everything around the critic — feedback predictions, the call
budget, batching, validation and rollback, lineage rows — and asks the critic only what a judge
answers: per prediction, a ``ModuleJudgement`` per module that shaped it; per module with a
non-neutral batch of judgements, a typed edit (``ProfileRewrite``, ``FilterRewrite``,
``RouterDecision``) or None. The phase never asks which brain is running: the scenario's
``backward.critic`` (default: the brain's own, ``Brain.critic``) names a critic in
``recnet.registry.CRITICS``, built as ``Critic(ctx, world, settings)``. Built-ins:
``offline`` (counterfactual credit and rule-based edits, ``recnet.critic.offline``) and ``llm``
(the pack's ``gradient`` and ``optimize`` templates through the LLM brain's public ``ask``,
``recnet.critic.llm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from recnet.brain.credit import Feedback, GradientInput, ModuleJudgement, ModuleKind
from recnet.brain.optimizer import FilterRewrite, ProfileRewrite, RouterDecision, RouterState
from recnet.world.agents import ClientAgent

if TYPE_CHECKING:
    from recnet.brain.optimizer import OptimizerSettings
    from recnet.context import RunContext
    from recnet.world.world import World

PROFILE_MODULE = "propagated_profile"
FILTER_MODULE = "filter_memory"
ClientEdit = ProfileRewrite | FilterRewrite


@dataclass
class Gradient:
    """A judgement with its id and the prediction it came from."""

    gradient_id: int
    feedback: Feedback
    judgement: ModuleJudgement


@dataclass(frozen=True, slots=True)
class ClientJob:
    """One user module (propagated profile or filter memory) to edit, with its judgements."""

    agent: ClientAgent
    module: ModuleKind
    judgements: Sequence[ModuleJudgement]
    step: int


@dataclass(frozen=True, slots=True)
class RouterJob:
    """One router to decide on (rewrite, τ, split, merge), with its judgements."""

    state: RouterState
    judgements: Sequence[ModuleJudgement]
    step: int


def any_signal(gradients: Sequence[Gradient]) -> bool:
    """Does any gradient of a batch say something other than "neutral"?"""
    return any(g.judgement.judgement != "neutral" for g in gradients)


class Critic(Protocol):
    """What the backward phase asks; see the module docstring."""

    async def judge(self, inputs: Sequence[GradientInput]) -> list[list[ModuleJudgement] | None]:
        """Per prediction, its modules' judgements (None: no usable judgement)."""
        ...

    def client_modules(
        self, profile: list[Gradient], filters: list[Gradient], filters_on: bool
    ) -> list[tuple[ModuleKind, list[Gradient]]]:
        """Which of a user's modules to edit this round, each with the gradients behind it."""
        ...

    async def edit_clients(self, jobs: Sequence[ClientJob]) -> list[ClientEdit | None]:
        """One edit (or None: leave it) per job, in job order."""
        ...

    async def decide_routers(
        self, jobs: Sequence[RouterJob], n_routers: int
    ) -> list[RouterDecision | None]:
        """One decision (or None) per router job; ``n_routers`` is K before any of them."""
        ...

    def spent(self, operation: str) -> None:
        """A gradient or optimize operation was paid from the backward budget (a critic whose
        brain does not count its own calls counts it here)."""
        ...


class CriticFactory(Protocol):
    """What ``recnet.registry.CRITICS`` holds: a critic class (or function) for one run."""

    def __call__(self, ctx: RunContext, world: World, settings: OptimizerSettings) -> Critic: ...

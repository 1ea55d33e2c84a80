"""The operations every brain implements, as typed tasks in and outcomes out.

Pipeline position: the phases (``recnet.phases``) build tasks from the world, hand a whole batch to
the brain, and apply the outcomes to the world; brains never mutate agents. Batching lets the LLM
brain send a phase's calls concurrently while the offline brain loops over them cheaply.
Operations (DESIGN §2): extract, reflect (inside ``interact``), summarize, merge, rank; the backward
phase adds gradient and optimize.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from recnet.data.types import Item
from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.buffer import RouterMessage
from recnet.world.profile import Weights
from recnet.world.rules import Decision


@dataclass(slots=True)
class ProfileUpdate:
    """A new version of one profile: weights always, text when the brain writes text."""

    weights: Weights
    text: str | None = None


@dataclass(slots=True)
class InteractionTask:
    """Forward step 1: ``user`` chooses between the item really consumed and a sampled negative."""

    user: ClientAgent
    positive: ClientAgent
    negative: ClientAgent
    step: int
    popularity: dict[str, float]  # item agent id → prior in [0, 1] for the two items
    #: the user's flushed buffer, merged before it chooses (a brain that fuses choose+merge gets
    #: them here instead of in a separate merge task; empty = nothing to merge)
    messages: list[RouterMessage] = field(default_factory=list)


@dataclass(slots=True)
class InteractionOutcome:
    chosen: str  # item agent id
    correct: bool
    updates: dict[str, ProfileUpdate]  # agent id → new original profile
    reasoning: str | None = None
    merge: MergeOutcome | None = None  # the user's merge of ``task.messages`` (when given)


@dataclass(slots=True)
class SummarizeTask:
    """Forward step 3: a router integrates the attributes routed to it this step."""

    router: RouterAgent
    routed: Weights  # attribute → summed signed change routed to this router
    step: int


@dataclass(slots=True)
class MergeTask:
    """Forward step 5: a client merges its flushed buffer into its propagated profile."""

    client: ClientAgent
    messages: list[RouterMessage]
    step: int


@dataclass(slots=True)
class MergeOutcome:
    decisions: list[tuple[Decision, str | None]]  # per message: decision and deciding rule id
    propagated: ProfileUpdate | None  # None = unchanged


@dataclass(slots=True)
class RankTask:
    """Evaluation: rank candidate items for a user."""

    user: ClientAgent
    candidates: list[ClientAgent]
    popularity: list[float]
    #: the trend of the user's routers (``recnet.world.trend``); the offline brain adds it to the
    #: user's profile (``propagation.trend_share``), an LLM brain names it in the rank prompt
    trend: Weights = field(default_factory=dict)
    #: the user's short-term memory, the items it chose last (oldest first,
    #: ``interaction.short_term_items``): the offline brain scores candidates against them, an
    #: LLM brain names them in the rank prompt
    recent: list[ClientAgent] = field(default_factory=list)


@dataclass(slots=True)
class RankOutcome:
    scores: list[float]  # one per candidate, higher = better
    reasoning: str | None = None
    ok: bool = True


@dataclass(slots=True)
class OperationCounts:
    """How many operations of each kind a brain performed (LLM calls in an LLM brain)."""

    counts: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    prompt_tokens: dict[str, int] = field(default_factory=dict)
    output_tokens: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        operation: str,
        n: int = 1,
        tokens: int = 0,
        *,
        prompt_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        self.counts[operation] = self.counts.get(operation, 0) + n
        if tokens:
            self.tokens[operation] = self.tokens.get(operation, 0) + tokens
        if prompt_tokens:
            self.prompt_tokens[operation] = self.prompt_tokens.get(operation, 0) + prompt_tokens
        if output_tokens:
            self.output_tokens[operation] = self.output_tokens.get(operation, 0) + output_tokens


BrainKind = Literal["offline", "llm"]


class Brain(Protocol):
    """The policy behind every agent operation."""

    kind: BrainKind
    critic: str  # name of the backward phase's default critic in recnet.registry.CRITICS
    label: str  # what the trace's runs.brain says: "offline", "llm:<backend>"
    checkpoint_every: int  # default steps between checkpoints (an LLM step costs money)
    # True when the brain ranks by the shared score formula (``world.formulas``), so that
    # prequential evaluation may score in one vectorised pass instead of calling ``rank``
    ranks_by_formula: bool
    operations: OperationCounts

    def state(self) -> object:
        """What a checkpoint carries of the brain (``recnet.checkpoint.Checkpointed``)."""
        ...

    def restore(self, state: object) -> None: ...

    async def extract_items(self, items: Sequence[Item]) -> dict[str, ProfileUpdate]:
        """Initial item profiles (keyed by dataset item id) from metadata."""
        ...

    async def interact(self, tasks: Sequence[InteractionTask]) -> list[InteractionOutcome]:
        """Choose, then reflect: new original profiles of the user and items."""
        ...

    async def summarize(self, tasks: Sequence[SummarizeTask]) -> list[ProfileUpdate]:
        """New router profiles."""
        ...

    async def merge(self, tasks: Sequence[MergeTask]) -> list[MergeOutcome]:
        """Filter buffered messages and update propagated profiles."""
        ...

    async def rank(self, tasks: Sequence[RankTask]) -> list[RankOutcome]:
        """Score candidates for evaluation."""
        ...

    async def aclose(self) -> None: ...

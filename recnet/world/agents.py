"""Client agents (users and items) and router agents.

Pipeline position: the state the forward and backward phases read and change. Agents hold state and
small behaviours (buffering, effective profile); deciding what to change is the brain's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Literal

from recnet.world.buffer import MessageBuffer
from recnet.world.formulas import effective_profile
from recnet.world.profile import Weights, category, render, value
from recnet.world.rules import FilterMemory

ClientKind = Literal["user", "item"]


def user_agent_id(user: str) -> str:
    return f"u:{user}"


def item_agent_id(item: str) -> str:
    return f"i:{item}"


@dataclass(slots=True)
class ClientAgent:
    """A user or item agent.

    ``original`` is the profile shaped by the agent's own interactions; ``propagated`` holds what it
    took in from its communities (P^pro evolves the original, it never replaces it). ``text`` and
    ``propagated_text`` are the LLM brain's textual profiles; the offline brain leaves them None and
    they are rendered from the weights on demand.
    """

    agent_id: str
    kind: ClientKind
    key: str  # the dataset's id
    label: str
    original: Weights
    buffer: MessageBuffer
    filters: FilterMemory
    propagated: Weights = field(default_factory=dict)
    text: str | None = None
    propagated_text: str | None = None
    interactions: int = 0
    #: a user's short-term memory: the agent ids of the last items it chose in training, oldest
    #: first (``interaction.short_term_items``; empty when that is 0)
    recent: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.buffer.owner:  # the buffer builds the messages it hands out for this client
            self.buffer.owner = self.agent_id

    def effective(self, propagated_weight: float) -> Weights:
        """The profile used to act: original plus weighted propagated preferences."""
        return effective_profile(self.original, self.propagated, propagated_weight)

    def profile_text(self) -> str:
        return self.text if self.text is not None else render(self.original)

    def propagated_profile_text(self) -> str:
        if self.propagated_text is not None:
            return self.propagated_text
        return render(self.propagated) if self.propagated else ""

    def __reduce__(self) -> tuple[type[ClientAgent], tuple[object, ...]]:
        """Pickled as its constructor's arguments: a checkpoint holds one agent per client, and
        the default slots state (a dict per object) stays alive in the pickler's memo until the
        dump ends."""
        return ClientAgent, _client_fields(self)


_client_fields = attrgetter(*(f.name for f in fields(ClientAgent)))


@dataclass(slots=True)
class RouterAgent:
    """A router: the descriptor of one community of related clients.

    ``tau`` is this router's multicast threshold (optimisable per router in the backward phase).
    """

    router_id: str
    profile: Weights
    tau: float
    created_step: int = -1
    origin: str = "init"
    version: int = 1
    text: str | None = None

    def profile_text(self) -> str:
        return self.text if self.text is not None else render(self.profile, limit=16)

    def label(self, size: int = 3) -> str:
        """A short name for the community: its strongest attributes (``genre comedy, era
        1990s, ...``), for the trace's ``agents.label``."""
        ranked = sorted(self.profile.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
        names = [f"{category(a)} {value(a)}" for a, w in ranked if w > 0]
        return ", ".join(names) or f"router {self.router_id} (empty profile)"

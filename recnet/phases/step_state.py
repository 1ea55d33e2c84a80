"""What one forward step hands from sub-phase to sub-phase, and what a checkpoint keeps of the
forward phase.

Pipeline position: built by ``recnet.phases.forward.ForwardPhase`` (one ``StepState`` per step,
read by the backward phase and the phase loop); ``ForwardState`` is the forward phase's part of a
checkpoint (``recnet.checkpoint.Checkpointed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from recnet.data.types import Interaction
from recnet.world.buffer import RouterMessage
from recnet.world.profile import Weights
from recnet.world.rules import Decision

MergeRecord = tuple[str, Sequence[RouterMessage], Sequence[tuple[Decision, str | None]]]


@dataclass
class StepState:
    """What one forward step produced so far (handed from sub-phase to sub-phase)."""

    step: int
    interactions: Sequence[Interaction]
    started_at: str
    n_correct: int = 0
    changed: dict[str, Weights] = field(default_factory=dict)  # agent id → attribute deltas
    routed: dict[str, Weights] = field(default_factory=dict)  # router id → routed deltas
    updated_routers: list[str] = field(default_factory=list)
    to_flush: dict[str, list[RouterMessage]] = field(default_factory=dict)
    n_messages: int = 0
    decided: dict[str, int] = field(
        default_factory=lambda: {"accepted": 0, "rejected": 0, "dropped": 0}
    )
    # every merge of the step, in order: (client id, merged messages, the filter's decisions)
    merges: list[MergeRecord] = field(default_factory=list)
    #: keep ``merges`` (the backward phase reads them); the final flush before evaluation does
    #: not, so its messages are freed chunk by chunk
    keep_merges: bool = True


@dataclass
class ForwardState:
    """What a checkpoint carries of the forward phase."""

    seq: int  # position in the chronological training stream
    max_count: int  # the most interactions of any item (popularity prior)
    dirty_profiles: set[str]  # clients whose profile changed since last written
    buffered: set[str]  # clients with a non-empty buffer
    prequential_ranks: list[tuple[int, int]] = field(default_factory=list)  # (step, rank)
    #: router → its integrate version not written yet (``trace.router_every``)
    dirty_routers: dict[str, int] = field(default_factory=dict)

"""The offline brain's pure work units: merging one client's flushed buffer and scoring one
user's candidates, from plain data (profiles, filter memory, messages) to plain results.

Pipeline position: called by ``recnet.brain.offline.OfflineBrain``: merges through its executor
(``recnet.exec``), in-process by default or as Ray tasks, one per chunk of clients; ``score_one``
for one user's few items (a training choice, ``OfflineBrain.score``), while rankings come from the
brain's row store (``recnet.eval.sparse_scorer``), the same bits.
Inputs are maps and frozen dataclasses, so they pickle cheaply, and nothing here reads or writes
the world: the brain applies the outcomes in the main process, in input order, so a Ray run gives
the same trace as a local one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recnet.brain.base import MergeOutcome, ProfileUpdate
from recnet.world.buffer import RouterMessage
from recnet.world.formulas import effective_profile, fold_messages, preference_score
from recnet.world.profile import Weights, norm
from recnet.world.rules import Decision, FilterMemory


@dataclass(frozen=True, slots=True)
class MergeParams:
    """The scenario's settings a merge reads."""

    filtering: bool  # world.filters.enabled
    damping: float  # propagation.merge_damping
    profile_size: int  # world.profile_size


@dataclass(frozen=True, slots=True)
class MergeInput:
    """One client's merge: its profiles, filter memory and the messages to take in."""

    original: Weights
    propagated: Weights
    filters: FilterMemory
    messages: Sequence[RouterMessage]
    step: int


def merge_one(params: MergeParams, work: MergeInput) -> MergeOutcome:
    """Filter rules decide per message; accepted ones are folded into the propagated profile
    (``recnet.world.formulas.fold_messages``), capped by the max-share rule."""
    decisions: list[tuple[Decision, str | None]] = (
        work.filters.decide_all(work.messages, work.step, work.original)
        if params.filtering
        else [("accepted", None)] * len(work.messages)
    )
    accepted = [
        message
        for message, (decision, _) in zip(work.messages, decisions, strict=True)
        if decision == "accepted"
    ]
    if not accepted:
        return MergeOutcome(decisions, None)
    share = work.filters.max_share() if params.filtering else 1.0
    propagated = fold_messages(work, accepted, params.damping, share, params.profile_size)
    return MergeOutcome(decisions, ProfileUpdate(propagated))


def merge_chunk(params: MergeParams, chunk: list[MergeInput]) -> list[MergeOutcome]:
    """``merge_one`` for each input, in order (one executor task)."""
    return [merge_one(params, work) for work in chunk]


@dataclass(frozen=True, slots=True)
class ScoreParams:
    """The scenario's settings the preference score reads (``interaction.*_weight``)."""

    propagated_weight: float
    popularity_weight: float


#: (original, propagated) of one client
Profiles = tuple[Weights, Weights]


@dataclass(frozen=True, slots=True)
class RankInput:
    """One user's candidate list to score."""

    user: Profiles
    candidates: Sequence[Profiles]
    popularity: Sequence[float]


def score_one(params: ScoreParams, work: RankInput) -> list[float]:
    """cos(effective user, effective item) + popularity prior, per candidate."""
    weight = params.propagated_weight
    profile = effective_profile(*work.user, weight)
    user_norm = norm(profile)
    return [
        preference_score(
            profile,
            user_norm,
            effective_profile(original, propagated, weight),
            pop,
            params.popularity_weight,
        )
        for (original, propagated), pop in zip(work.candidates, work.popularity, strict=True)
    ]

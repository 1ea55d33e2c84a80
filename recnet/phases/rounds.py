"""Conflict-free rounds: the order in which a step's interactions may run together.

Pipeline position: the forward phase's interaction update (``recnet.phases.forward``) hands the
brain one round at a time; within a round no agent appears twice, so the brain may process its
interactions concurrently while every agent still sees its own earlier updates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from recnet.world.agents import ClientAgent


def conflict_free_rounds(
    order: list[int],
    users: Sequence[ClientAgent],
    positives: Sequence[ClientAgent],
    negatives: Sequence[ClientAgent],
) -> Iterator[list[int]]:
    """Split interactions into consecutive rounds in which no agent appears twice.

    Within a round the brain may process interactions concurrently; rounds run in order, so an
    agent always sees its own earlier updates (time order is kept per agent).
    """
    current: list[int] = []
    busy: set[str] = set()
    for position in order:
        agents = {
            users[position].agent_id,
            positives[position].agent_id,
            negatives[position].agent_id,
        }
        if busy & agents:
            yield current
            current, busy = [], set()
        current.append(position)
        busy |= agents
    if current:
        yield current

"""Checkpoints: the whole mutable state of a run after a completed step, stored in its trace.

Pipeline position: written by the runner in the same transaction as a step's trace rows (so a
checkpoint and the rows it accounts for land together, even under ``kill -9``); read by
``recnet simulate --resume``, which truncates the trace after the checkpoint's step and continues.
Steps completed after the newest checkpoint are simply run again: the offline brain is
deterministic and an LLM brain's calls are answered from the record/replay cache, so nothing is
paid twice and no row is duplicated.

The state is pickled (uncompressed: compressing embedding matrices costs seconds per step and
only the newest checkpoint is kept). Only load checkpoints from trace files you trust
(pickle can run code); recnet never loads a checkpoint from anywhere else.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from recnet.brain.base import OperationCounts
from recnet.context import RunContext
from recnet.errors import TraceError
from recnet.world.world import World

FORMAT = "pickle/2"


class Checkpointed(Protocol):
    """A part of a run that carries state across a checkpoint besides the world: the brain, the
    forward phase, the backward phase. ``state()`` returns a typed, picklable value that
    ``restore(state)`` puts back into a freshly built part."""

    def state(self) -> object: ...

    def restore(self, state: object) -> None: ...


@dataclass
class Checkpoint:
    """Everything needed to continue after ``step``."""

    step: int
    world: World
    operations: OperationCounts
    run_stats: dict[str, int]
    parts: dict[str, object]  # part name ("brain", "forward", "backward") → its state()

    @classmethod
    def of(
        cls,
        step: int,
        world: World,
        operations: OperationCounts,
        run_stats: Mapping[str, int],
        parts: Mapping[str, Checkpointed],
    ) -> Checkpoint:
        return cls(
            step, world, operations, dict(run_stats), {n: p.state() for n, p in parts.items()}
        )

    def restore(self, parts: Mapping[str, Checkpointed]) -> None:
        """Give each rebuilt part the state it had (parts the checkpoint lacks are left alone)."""
        for name, part in parts.items():
            if name in self.parts:
                part.restore(self.parts[name])


def dump(checkpoint: Checkpoint) -> bytes:
    return pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)


def load(blob: bytes, fmt: str) -> Checkpoint:
    if fmt != FORMAT:
        raise TraceError(
            f"checkpoint format {fmt!r} is not readable by this recnet ({FORMAT})",
            "resume with the recnet version that wrote the run",
        )
    checkpoint = pickle.loads(blob)
    if not isinstance(checkpoint, Checkpoint):
        raise TraceError("the checkpoint in this trace is damaged", "start the run again")
    return checkpoint


def add_checkpoint(
    ctx: RunContext, world: World, step: int, parts: Mapping[str, Checkpointed]
) -> None:
    """Queue the state after ``step``; it is written in the step's own transaction."""
    checkpoint = Checkpoint.of(step, world, ctx.brain.operations, ctx.stats, parts)
    ctx.store.add(
        "checkpoints",
        [
            {
                "run_id": ctx.run_id,
                "step": step,
                "created_at": ctx.clock(),
                "format": FORMAT,
                "state": dump(checkpoint),
            }
        ],
    )

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
from dataclasses import dataclass, field
from typing import Any

from recnet.brain.base import OperationCounts
from recnet.errors import TraceError
from recnet.world.world import World

FORMAT = "pickle/1"


@dataclass
class Checkpoint:
    """Everything needed to continue after ``step``."""

    step: int
    world: World
    forward: dict[str, Any]  # ForwardPhase counters (see ForwardPhase.state)
    operations: OperationCounts
    run_stats: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. LLM stats, backward counters


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

"""``RunContext``: everything a phase needs besides the world, built once by the composition root.

Pipeline position: created by ``recnet.runner`` (the only place that builds concrete brains,
stores and embedders), passed to every phase. Tests build their own with fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from recnet.brain.base import Brain
from recnet.config.scenario import Scenario
from recnet.exec.threads import BlasThreads
from recnet.rng import SeedTree
from recnet.trace.lease import TraceLease
from recnet.trace.store import TraceStore


def utc_now() -> str:
    """ISO-8601 UTC timestamp with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class RunContext:
    scenario: Scenario
    brain: Brain
    store: TraceStore
    run_id: str
    seeds: SeedTree
    clock: Callable[[], str] = utc_now
    on_step: Callable[[int, int], None] | None = None  # (completed step, total steps)
    stats: dict[str, int] = field(default_factory=dict)
    prequential: object | None = None  # recnet.eval.prequential.PrequentialSummary, at the end
    lease: TraceLease | None = None  # the trace's writer lease, released when the run closes
    #: the BLAS thread limit while the run is open (``recnet.supervisor`` sets the scenario's)
    blas: BlasThreads = field(default_factory=lambda: BlasThreads(None))
    step: int = -1  # where the run is (the phase loop updates both; error lines name them)
    phase: str = "initialise"

    def at(self, step: int, phase: str) -> None:
        """Record that ``phase`` of ``step`` is starting."""
        self.step, self.phase = step, phase

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

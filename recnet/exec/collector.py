"""How often Python's cyclic garbage collector runs while a run is open (``executor.gc_threshold``).

Pipeline position: ``recnet.supervisor.supervised`` opens ``relaxed_collector`` around a run's
whole body, beside ``recnet.exec.threads.BlasThreads``. A step allocates millions of small
containers (router messages, buffers, score dicts) that live for a step or less. With CPython's
default young-generation threshold (700 net allocations) the collector runs thousands of times per
run; it promotes those objects into the old generation before they die, and the promotions soon
trigger full collections, which traverse every profile in the world: 12 % of a 10k-agent run and
14 % of a 30k-agent one (``experiments/README.md``, "The cyclic garbage collector"),
and more as the world grows. A young threshold of ``DEFAULT_THRESHOLD`` lets them die first: the
collector still runs (a run makes few reference cycles, and they are still freed), but a handful
of times per run. Results are the same, and peak memory within 2 %. The setting is
process-wide while the run is open and restored when it ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: ``executor.gc_threshold``'s default: net container allocations between young collections.
DEFAULT_THRESHOLD = 100_000


@contextmanager
def relaxed_collector(threshold: int | None) -> Iterator[None]:
    """Raise the collector's young-generation threshold for a run; restore it afterwards.

    ``threshold`` None leaves the interpreter's setting alone; a threshold below the one in force
    is not lowered (an application that relaxed it further keeps its choice).
    """
    if threshold is None:
        yield
        return
    previous = gc.get_threshold()
    young, middle, old = previous
    gc.set_threshold(max(young, threshold), middle, old)
    try:
        yield
    finally:
        gc.set_threshold(*previous)

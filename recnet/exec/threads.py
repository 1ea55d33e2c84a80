"""How many threads numpy's BLAS may use while a run is open (``executor.blas_threads``).

Pipeline position: entered by ``recnet.supervisor.supervised`` around a run's whole body
(initialisation, steps, evaluation). The simulation's matrix products are small (client vectors
times one router embedding, membership refreshes, a step's validation scores), so a BLAS thread
pool only spins beside the main thread: on the 2-core reference machine it burnt ~40 s of CPU in
the 54 s MovieLens main job and slowed it by ~3.5 s, and more when two runs share the machine
(``experiments/README.md``, "BLAS threads"). The limit is process-wide while it is in force
(``threadpoolctl``), and lifted when the run ends.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from threadpoolctl import threadpool_limits


def blas_threads(limit: int | None) -> AbstractContextManager[object]:
    """Limit BLAS to ``limit`` threads while the context is open; None leaves it alone."""
    if limit is None:
        return nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")

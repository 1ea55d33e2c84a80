"""How many threads numpy's BLAS may use while a run is open (``executor.blas_threads``).

Pipeline position: ``recnet.supervisor.supervised`` opens a ``BlasThreads`` around a run's whole
body (initialisation, steps, evaluation) and puts it on the run context; ``recnet.runner``'s
``build_loop`` tells it the world's size once the world exists (``fit``). The simulation's matrix
products are mostly small (client vectors times one router embedding, membership refreshes, a
step's validation scores), and then a BLAS thread pool only spins beside the main thread: on the
2-core reference machine it burnt ~37 s of CPU in the ~56 s MovieLens main job (wall time 0-6 s
more), and slowed two runs side by side by 40 %. In a large world the products are large enough
to gain from the pool (30k agents: 5 % faster with it). So ``auto`` limits BLAS to one thread
from the first step on in a world of fewer than ``AUTO_MAX_CLIENTS`` clients and leaves it alone
otherwise (``experiments/README.md``, "BLAS threads"). The limit is process-wide while it is in
force (``threadpoolctl``) and lifted when the run ends.
"""

from __future__ import annotations

from types import TracebackType
from typing import Literal

from threadpoolctl import threadpool_limits

#: ``auto``: worlds with fewer clients (users + items) than this run BLAS on one thread.
AUTO_MAX_CLIENTS = 20_000


class BlasThreads:
    """The run's BLAS thread limit: a context manager, refined by ``fit`` for ``auto``."""

    def __init__(self, setting: int | Literal["auto"] | None) -> None:
        self.setting = setting
        #: the thread limit in force (None = the library's own)
        self.limit: int | None = None
        self._limiter: threadpool_limits | None = None

    def __enter__(self) -> BlasThreads:
        if isinstance(self.setting, int):
            self._apply(self.setting)
        return self

    def fit(self, n_clients: int) -> None:
        """With ``auto``: one thread when the world has fewer than ``AUTO_MAX_CLIENTS`` clients."""
        if self.setting == "auto" and self.limit is None and n_clients < AUTO_MAX_CLIENTS:
            self._apply(1)

    def _apply(self, limit: int) -> None:
        self._limiter = threadpool_limits(limits=limit, user_api="blas")
        self.limit = limit

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter, self.limit = None, None

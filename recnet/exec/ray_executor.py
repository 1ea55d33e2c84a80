"""The Ray executor: a step's independent work spread over a Ray cluster, one task per chunk.

Pipeline position: built by ``recnet.exec.base.build_executor`` for ``executor.kind: ray``; the
offline brain hands it pure chunk functions (``recnet.brain.offline_work``). Ray is connected on
first use: to ``executor.address`` when set, else to a Ray instance already running in this
process, else to a new local one with ``executor.num_cpus`` CPUs. Work smaller than
``executor.min_items`` stays in-process (a Ray task costs about a millisecond, a merge tens of
microseconds). The results are the same bits as in-process: the functions are pure, run on the
same Python, and their outputs come back in input order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from recnet.config.executor_settings import ExecutorSettings
from recnet.errors import ScenarioError
from recnet.exec.base import ChunkFunction, split

T = TypeVar("T")
R = TypeVar("R")


def _run_chunk(fn: ChunkFunction[T, R], chunk: list[T]) -> list[R]:
    return fn(chunk)


class RayExecutor:
    """Runs chunk functions as Ray tasks; see the module docstring."""

    kind = "ray"

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.remote_tasks = 0  # Ray tasks submitted so far
        self.local_calls = 0  # calls too small for Ray, run in-process
        self._ray: Any = None
        self._remote: Any = None
        self._started = False  # this executor called ray.init (and so shuts it down)
        self._chunks = settings.chunks or 0

    def _connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        import ray

        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            if self.settings.address:
                options["address"] = self.settings.address
            else:
                options["num_cpus"] = self.settings.num_cpus
            try:
                ray.init(**options)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = self.settings.address or "a new local instance"
                raise ScenarioError(
                    f"executor.address: cannot connect to Ray at {where} ({exc})",
                    "start the cluster (ray start --head) or leave executor.address unset",
                ) from exc
            self._started = True
        if not self._chunks:
            self._chunks = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(_run_chunk)
        self._ray = ray
        return ray

    def map_chunks(self, fn: ChunkFunction[T, R], items: Sequence[T]) -> list[R]:
        if not items:
            return []
        if len(items) < self.settings.min_items:
            self.local_calls += 1
            return fn(list(items))
        ray = self._connect()
        chunks = split(items, self._chunks)
        function = ray.put(fn)
        refs = [self._remote.remote(function, chunk) for chunk in chunks]
        self.remote_tasks += len(refs)
        results: list[R] = []
        for part in ray.get(refs):  # in submission order = input order
            results.extend(part)
        return results

    def close(self) -> None:
        if self._ray is not None and self._started:
            self._ray.shutdown()
        self._ray = self._remote = None
        self._started = False

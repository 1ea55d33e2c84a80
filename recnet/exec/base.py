"""The executor protocol and the in-process executor.

Pipeline position: built once by the composition root (``recnet.brain.factory``) from the
scenario's ``executor`` block and handed to the offline brain, which spreads work that is pure
given its inputs (merges of flushed buffers) through ``map_chunks``. (Rankings run in-process,
vectorised over the brain's row store, ``recnet.eval.sparse_scorer``.)
Results come back in input order and are applied in the main process, so the world stays
consistent and the trace is the same whichever executor ran the work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from recnet.config.executor_settings import ExecutorSettings
from recnet.errors import ScenarioError

T = TypeVar("T")
R = TypeVar("R")

#: A function of one chunk of items returning one result per item, in order. It must be picklable
#: (a module-level function, or ``functools.partial`` of one) for a remote executor.
ChunkFunction = Callable[[list[T]], list[R]]

RAY_REMEDY = "install it with pip install -e '.[ray]' (or set executor.kind: local)"


class Executor(Protocol):
    """Runs a chunk function over items and returns the results in input order."""

    kind: str

    def map_chunks(self, fn: ChunkFunction[T, R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` cut into chunks; one result per item, in input order."""
        ...

    def close(self) -> None:
        """Give back what the executor holds (a Ray connection it opened)."""
        ...


class LocalExecutor:
    """The default: one call of ``fn`` on all items, in this process."""

    kind = "local"

    def map_chunks(self, fn: ChunkFunction[T, R], items: Sequence[T]) -> list[R]:
        if not items:
            return []
        return fn(list(items))

    def close(self) -> None:
        return None


def split(items: Sequence[T], n: int) -> list[list[T]]:
    """``items`` cut into at most ``n`` consecutive chunks of nearly equal size (none empty)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    chunks, start = [], 0
    for i in range(n):
        stop = start + size + (1 if i < extra else 0)
        chunks.append(list(items[start:stop]))
        start = stop
    return chunks


def build_executor(settings: ExecutorSettings) -> Executor:
    """The executor ``settings.kind`` names. Ray is imported (not started) here, so a missing
    package fails before the run, with the fix."""
    if settings.kind == "local":
        return LocalExecutor()
    if settings.kind == "ray":
        try:
            import ray  # noqa: F401  (imported, not started: the executor connects on first use)
        except ImportError as exc:
            raise ScenarioError(
                "executor.kind: ray needs the ray package, which is not installed", RAY_REMEDY
            ) from exc
        from recnet.exec.ray_executor import RayExecutor

        return RayExecutor(settings)
    raise ScenarioError(  # the scenario model admits only the kinds above
        f"executor.kind: unknown executor {settings.kind!r}", "use local or ray"
    )

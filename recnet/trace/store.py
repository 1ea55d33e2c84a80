"""The ``TraceStore`` protocol and the buffering, validation and resume logic its stores share.

Pipeline position: the phase loop writes every agent action through a ``TraceStore`` (the last
stage of the pipeline); ``recnet traces`` and experiments read it back. Two implementations
follow one contract: ``SQLiteTraceStore`` (the real one) and ``MemoryTraceStore`` (tests).

Write model, the same for every store:

* ``create_run`` / ``update_run`` write at once.
* ``add`` checks the shape of rows (dicts, or tuples in insert order: ``recnet.trace.rows``)
  against ``recnet.trace.schema`` and buffers them as tuples; once ``batch_size`` rows are
  buffered (all tables together) they are written (by a background writer: without waiting).
* ``flush`` checks the values of every buffered row (a bad one is a TraceError naming its column;
  the batch is dropped) and writes them all in one transaction.
* ``commit_step`` flushes and sets ``runs.last_completed_step`` in the same transaction, so a
  step's rows and its completion marker land together.
* ``truncate_after`` removes what a crashed run wrote after its last completed step, so a resumed
  run neither duplicates nor loses rows.

Reads (``read``, ``count``, ``runs``) see flushed rows only, ordered by primary key.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from sqlalchemy import Table

from recnet.errors import TraceError
from recnet.trace import schema
from recnet.trace.rows import Row, TableSpec, Values

#: Every table of the trace, by name.
TABLES: dict[str, Table] = dict(schema.metadata.tables)
#: Tables ``add`` refuses: runs go through ``create_run``; migrations are the store's own.
NOT_ADDABLE: dict[str, str] = {
    "runs": "use create_run() / update_run() for the runs table",
    "schema_migrations": "schema_migrations is maintained by the store itself",
}


SPECS: dict[str, TableSpec] = {name: TableSpec.of(table) for name, table in TABLES.items()}
#: Tables whose rows belong to a step (``truncate_after`` deletes rows with a later step).
STEP_TABLES: tuple[str, ...] = tuple(n for n, t in TABLES.items() if "step" in t.c)
#: Tables whose rows are created at a step (deleted when created after the truncation point).
CREATED_STEP_TABLES: tuple[str, ...] = tuple(n for n, t in TABLES.items() if "created_step" in t.c)
#: Tables whose rows may be retired at a step (``retired_step`` reset to NULL when later).
RETIRED_STEP_TABLES: tuple[str, ...] = tuple(n for n, t in TABLES.items() if "retired_step" in t.c)
#: Tables whose rows are written when decided at a step (deleted when decided later: the resumed
#: run decides them again from the checkpoint's buffers and writes them anew).
DECIDED_STEP_TABLES: tuple[str, ...] = tuple(n for n, t in TABLES.items() if "decided_step" in t.c)


def spec(table: str, *, for_add: bool = False) -> TableSpec:
    """The spec of ``table``; TraceError naming the known tables if there is no such table."""
    if for_add and table in NOT_ADDABLE:
        raise TraceError(f"cannot add rows to trace table {table!r}", NOT_ADDABLE[table])
    try:
        return SPECS[table]
    except KeyError:
        known = ", ".join(n for n in TABLES if not (for_add and n in NOT_ADDABLE))
        raise TraceError(f"unknown trace table {table!r}", f"known tables: {known}") from None


def check_filter(table: str, run_id: str | None, equals: Mapping[str, Any]) -> TableSpec:
    """Validate the arguments of ``read``/``count``; return the table's spec."""
    table_spec = spec(table)
    keys = list(equals)
    if run_id is not None:
        keys.append("run_id")
    unknown = [k for k in keys if k not in table_spec.columns]
    if unknown:
        raise TraceError(
            f"cannot filter trace table {table!r} on {', '.join(map(repr, unknown))}",
            f"columns of {table!r}: {', '.join(table_spec.columns)}",
        )
    return table_spec


def check_run_fields(fields: Mapping[str, Any]) -> None:
    """Validate the keyword arguments of ``update_run``."""
    runs_spec = SPECS["runs"]
    bad = [k for k in fields if k not in runs_spec.columns or k == "run_id"]
    if bad:
        raise TraceError(
            f"cannot update run field(s) {', '.join(map(repr, bad))}",
            f"updatable fields: {', '.join(c for c in runs_spec.columns if c != 'run_id')}",
        )
    nulls = [k for k, v in fields.items() if v is None and k in runs_spec.not_null]
    if nulls:
        raise TraceError(
            f"run field(s) {', '.join(map(repr, nulls))} cannot be NULL",
            "pass a value for each field",
        )


def unknown_run(run_id: str) -> TraceError:
    return TraceError(
        f"no run {run_id!r} in this trace", "create_run() it first, or check the run id"
    )


@runtime_checkable
class TraceStore(Protocol):
    """Where a run's trace goes. See the module docstring for the write model."""

    batch_size: int

    def create_run(self, row: Mapping[str, Any]) -> None: ...

    def update_run(self, run_id: str, **fields: Any) -> None: ...

    def add(self, table: str, rows: Iterable[Mapping[str, Any] | Values]) -> None: ...

    def flush(self) -> None: ...

    def commit_step(self, run_id: str, step: int) -> None: ...

    def truncate_after(self, run_id: str, step: int) -> None: ...

    def retire_routers(self, run_id: str, router_ids: Iterable[str], step: int) -> None: ...

    def wait(self) -> None:
        """Block until rows handed to a background writer are written (no-op otherwise)."""
        ...

    def read(
        self, table: str, run_id: str | None = None, *, limit: int | None = None, **equals: Any
    ) -> list[Row]: ...

    def count(self, table: str, run_id: str | None = None, **equals: Any) -> int: ...

    def runs(self) -> list[Row]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BufferedTraceStore(abc.ABC):
    """Buffering and validation shared by the stores; subclasses do the actual I/O.

    Subclasses implement ``_write`` (one transaction: the batches, then optionally the step
    marker), ``_truncate`` and the reads.
    """

    def __init__(self, batch_size: int = 2000, *, background: bool = False) -> None:
        if batch_size < 1:
            raise TraceError(
                f"trace batch_size must be at least 1, got {batch_size}",
                "set trace.batch_size to a positive number of rows",
            )
        self.batch_size = batch_size
        self._buffers: dict[str, list[Values]] = {}
        self._pending = 0
        self._closed = False
        # With ``background``, batches are written by one worker thread while the simulation goes
        # on (sqlite releases the GIL while it writes). At most one batch is in flight; every read,
        # flush and close waits for it, and its errors surface at the next store call.
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="recnet-trace") if background else None
        )
        self._inflight: Future[None] | None = None

    # -- writes --------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows buffered and not yet written."""
        return self._pending

    def add(self, table: str, rows: Iterable[Mapping[str, Any] | Values]) -> None:
        """Check and buffer ``rows``: dicts, or tuples in ``SPECS[table].insert_columns`` order."""
        self._check_writable()
        table_spec = spec(table, for_add=True)
        single = type(rows) is tuple and len(rows) > 0 and not isinstance(rows[0], tuple | Mapping)
        if isinstance(rows, Mapping) or single:
            raise TraceError(
                f"add({table!r}, ...) expects an iterable of rows, got a single "
                f"{type(rows).__name__}",
                "wrap the row in a list",
            )
        checked = table_spec.tuples(rows)  # all or nothing
        start = 0
        while start < len(checked):
            room = self.batch_size - self._pending
            chunk = checked[start : start + room]
            self._buffers.setdefault(table, []).extend(chunk)
            self._pending += len(chunk)
            start += len(chunk)
            if self._pending >= self.batch_size:
                self._write_buffers(None)  # a background writer takes it; no wait here

    def flush(self) -> None:
        self._check_writable()
        if self._pending:
            self._write_buffers(None)
        self.wait()

    def wait(self) -> None:
        """Block until the batch being written in the background (if any) is written."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.result()

    def commit_step(self, run_id: str, step: int) -> None:
        self._check_writable()
        self._write_buffers((run_id, step))

    def truncate_after(self, run_id: str, step: int) -> None:
        self._check_writable()
        self.flush()
        self._truncate(run_id, step)

    def retire_routers(self, run_id: str, router_ids: Iterable[str], step: int) -> None:
        """Set ``routers.retired_step`` of routers merged away or split at ``step`` (their rows
        are written first; a resume before ``step`` clears it again, see ``truncate_after``)."""
        self._check_writable()
        self.flush()
        self._retire(run_id, list(router_ids), step)

    def _write_buffers(self, marker: tuple[str, int] | None) -> None:
        batches = {name: rows for name, rows in self._buffers.items() if rows}
        # The buffer is emptied whether or not the write succeeds: a failed write raises, and
        # its rows (a programming error such as a duplicate key) must not poison later flushes.
        self._buffers = {}
        self._pending = 0
        for name, rows in batches.items():
            SPECS[name].check_values(rows)
        if self._executor is None:
            self._write(batches, marker)
            return
        self.wait()
        self._inflight = self._executor.submit(self._write, batches, marker)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Flush what is buffered and release the store; closing twice is harmless."""
        if self._closed:
            return
        try:
            if self._pending and not self.read_only:
                self.flush()
            self.wait()
        finally:
            self._closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def read_only(self) -> bool:
        return False

    def _check_writable(self) -> None:
        if self._closed:
            raise TraceError("the trace store is closed", "open a new store to write")
        if self.read_only:
            raise TraceError(
                "this trace store was opened read-only", "open it without read_only to write"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise TraceError("the trace store is closed", "open a new store to read")

    # -- for subclasses ------------------------------------------------------------------------

    @abc.abstractmethod
    def _write(self, batches: dict[str, list[Values]], marker: tuple[str, int] | None) -> None:
        """Insert ``batches`` (checked row tuples in insert order) and, if given, set the run's
        last completed step; one transaction."""

    @abc.abstractmethod
    def _truncate(self, run_id: str, step: int) -> None:
        """Remove everything the run recorded after ``step``; one transaction."""

    @abc.abstractmethod
    def _retire(self, run_id: str, router_ids: list[str], step: int) -> None:
        """Set ``retired_step`` of the given routers; one transaction."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free resources (connections); called once by ``close``."""

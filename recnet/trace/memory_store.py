"""``MemoryTraceStore``: the trace store contract held in Python lists (tests, quick experiments).

Pipeline position: a drop-in ``TraceStore`` for the phase loop when nothing should touch the
disk. It enforces what SQLite would (NOT NULL columns, unique primary keys, atomic writes) so the
contract tests hold for both stores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from recnet.errors import TraceError
from recnet.trace.rows import SpooledBlob
from recnet.trace.store import (
    CREATED_STEP_TABLES,
    DECIDED_STEP_TABLES,
    RETIRED_STEP_TABLES,
    SPECS,
    STEP_TABLES,
    TABLES,
    BufferedTraceStore,
    Row,
    Values,
    check_filter,
    check_run_fields,
    unknown_run,
)


class MemoryTraceStore(BufferedTraceStore):
    """A trace store in memory. Same contract as ``SQLiteTraceStore``; nothing survives it."""

    def __init__(self, batch_size: int = 2000) -> None:
        super().__init__(batch_size)
        self._tables: dict[str, list[Row]] = {name: [] for name in TABLES}
        self._keys: dict[str, set[tuple[Any, ...]]] = {name: set() for name in TABLES}
        self._next_id: dict[str, int] = {name: 1 for name in TABLES}

    # -- runs ----------------------------------------------------------------------------------

    def create_run(self, row: Mapping[str, Any]) -> None:
        self._check_writable()
        runs = SPECS["runs"]
        self._insert({"runs": [runs.ordered(runs.normalise(row))]})

    def update_run(self, run_id: str, **fields: Any) -> None:
        self._check_writable()
        check_run_fields(fields)
        self._run(run_id).update(fields)

    def _run(self, run_id: str) -> Row:
        for run in self._tables["runs"]:
            if run["run_id"] == run_id:
                return run
        raise unknown_run(run_id)

    # -- writes --------------------------------------------------------------------------------

    def _write(self, batches: dict[str, list[Values]], marker: tuple[str, int] | None) -> None:
        run = self._run(marker[0]) if marker is not None else None  # check before changing
        self._insert(batches)
        for row in map(SPECS["checkpoints"].as_dict, batches.get("checkpoints", [])):
            for name in ("checkpoints", "checkpoint_parts"):
                self._keep(name, _not_older_than(row["run_id"], row["step"]))
        if run is not None and marker is not None:
            run["last_completed_step"] = marker[1]

    def _insert(self, batches: dict[str, list[Values]]) -> None:
        """Insert all rows or none: keys are checked before anything is stored."""
        staged: dict[str, list[tuple[tuple[Any, ...], Row]]] = {}
        next_id = dict(self._next_id)
        for name, rows in batches.items():
            table_spec = SPECS[name]
            existing, new = self._keys[name], set()
            out = staged.setdefault(name, [])
            auto = table_spec.autoincrement
            for row in rows:
                stored = table_spec.as_dict(row)
                if "bytes" in table_spec.kinds:  # spooled values are read now, like SQLite does
                    stored = {
                        k: v.read() if isinstance(v, SpooledBlob) else v for k, v in stored.items()
                    }
                if auto is not None:
                    stored[auto] = next_id[name]
                    next_id[name] += 1
                key = tuple(stored[c] for c in table_spec.primary_key)
                if key in existing or key in new:
                    raise TraceError(
                        f"duplicate primary key {key!r} in trace table {name!r}",
                        "each row must be recorded once; a resumed run must truncate_after() "
                        "its last completed step first",
                    )
                new.add(key)
                out.append((key, stored))
        for name, items in staged.items():
            self._tables[name].extend(row for _, row in items)
            self._keys[name].update(key for key, _ in items)
        self._next_id = next_id

    def _truncate(self, run_id: str, step: int) -> None:
        run = self._run(run_id)

        def mine(row: Row) -> bool:
            return bool(row["run_id"] == run_id)

        for name in STEP_TABLES:
            self._keep(name, lambda r: not (mine(r) and r["step"] > step))
        for name in CREATED_STEP_TABLES:
            self._keep(name, lambda r: not (mine(r) and r["created_step"] > step))
        for name in RETIRED_STEP_TABLES:
            for row in self._tables[name]:
                if mine(row) and row["retired_step"] is not None and row["retired_step"] > step:
                    row["retired_step"] = None
        for name in DECIDED_STEP_TABLES:
            self._keep(
                name,
                lambda r: (
                    not (mine(r) and r["decided_step"] is not None and r["decided_step"] > step)
                ),
            )
        run["last_completed_step"] = min(run["last_completed_step"], step)

    def _retire(self, run_id: str, router_ids: list[str], step: int) -> None:
        wanted = set(router_ids)
        for row in self._tables["routers"]:
            if row["run_id"] == run_id and row["router_id"] in wanted:
                row["retired_step"] = step

    def _keep(self, name: str, keep: Any) -> None:
        pk = SPECS[name].primary_key
        rows = [row for row in self._tables[name] if keep(row)]
        self._tables[name] = rows
        self._keys[name] = {tuple(row[c] for c in pk) for row in rows}

    # -- reads ---------------------------------------------------------------------------------

    def read(
        self, table: str, run_id: str | None = None, *, limit: int | None = None, **equals: Any
    ) -> list[Row]:
        self._check_open()
        rows = self._select(table, run_id, equals)
        pk = SPECS[table].primary_key
        rows.sort(key=lambda row: tuple(row[c] for c in pk))
        if limit is not None:
            rows = rows[: max(limit, 0)]
        return [dict(row) for row in rows]

    def count(self, table: str, run_id: str | None = None, **equals: Any) -> int:
        self._check_open()
        return len(self._select(table, run_id, equals))

    def runs(self) -> list[Row]:
        self._check_open()
        rows = sorted(self._tables["runs"], key=lambda r: (r["started_at"], r["run_id"]))
        return [dict(row) for row in rows]

    def _select(self, table: str, run_id: str | None, equals: dict[str, Any]) -> list[Row]:
        check_filter(table, run_id, equals)
        wanted = dict(equals)
        if run_id is not None:
            wanted["run_id"] = run_id
        return [
            row
            for row in self._tables[table]
            if all(_equal(row[col], value) for col, value in wanted.items())
        ]

    def _release(self) -> None:
        pass


def _equal(stored: Any, wanted: Any) -> bool:
    if wanted is None or stored is None:
        return stored is wanted
    return bool(stored == wanted)


def _not_older_than(run_id: str, newest: int) -> Callable[[Row], bool]:
    """Row filter keeping every checkpoint except ``run_id``'s older than ``newest``."""
    return lambda r: r["run_id"] != run_id or r["step"] >= newest

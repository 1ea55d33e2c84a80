"""Trace rows as tuples: what the stores know about each table, and the checks every row passes.

Pipeline position: ``BufferedTraceStore.add`` (``recnet.trace.store``) turns each row it is given
into a tuple in its table's insert order and checks its shape; just before a write it checks the
values column by column. Both stores then write tuples: SQLite binds them to one prepared
``INSERT`` per table, the memory store zips them back into dicts.

A row is a dict mapping column names to values, or a tuple of values in ``insert_columns`` order
(every column of the table except a key the database assigns, such as ``messages.id``); tuples
skip the per-row dict handling on hot paths such as message rows.

Values a column takes (anything else is a TraceError naming the table and the column, never a
silent write): ``str`` for String/Text, ``int`` (or ``bool``) for Integer, ``float`` or ``int`` for
Float, ``bool`` (or 0/1) for Boolean, ``bytes`` (or a ``SpooledBlob``) for LargeBinary; numpy
scalars of those kinds too; ``None`` only where the column is nullable.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import Boolean, Column, Float, Integer, LargeBinary, String, Table

from recnet.errors import TraceError

Row = dict[str, Any]
Values = tuple[Any, ...]

_NP_INTS: frozenset[type] = frozenset(
    {np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64}
)
_NP_FLOATS: frozenset[type] = frozenset({np.float16, np.float32, np.float64})
#: Exact Python types each kind of column takes as is (one set() comparison per column).
EXACT_TYPES: dict[str, frozenset[type]] = {
    "str": frozenset({str}),
    "int": frozenset({int, bool}) | _NP_INTS,
    "float": frozenset({float, int}) | _NP_FLOATS | _NP_INTS,
    "bool": frozenset({bool, np.bool_}),
    "bytes": frozenset({bytes}),
}
WHAT: dict[str, str] = {
    "str": "a str",
    "int": "an int",
    "float": "a float",
    "bool": "a bool",
    "bytes": "bytes",
}


def column_kind(column: Column[Any]) -> str:
    """The kind of values ``column`` takes: str, int, float, bool or bytes."""
    sql_type = column.type
    if isinstance(sql_type, Boolean):
        return "bool"
    if isinstance(sql_type, Integer):
        return "int"
    if isinstance(sql_type, Float):
        return "float"
    if isinstance(sql_type, LargeBinary):
        return "bytes"
    if isinstance(sql_type, String):
        return "str"
    raise TypeError(f"trace column {column} has a type the stores cannot check: {sql_type!r}")


class Spool:
    """An anonymous temporary file (in ``TMPDIR``) that holds spooled values; it is closed, and so
    removed, when the last ``SpooledBlob`` reading from it is dropped."""

    __slots__ = ("file",)

    def __init__(self) -> None:
        # not a with-block: the file lives as long as the values spooled into it
        self.file: BinaryIO = tempfile.TemporaryFile(prefix="recnet-spool-")  # noqa: SIM115

    def __del__(self) -> None:
        self.file.close()


class SpooledBlob:
    """A LargeBinary value kept in a file until it is written: ``length`` bytes at ``offset`` of
    ``spool``. A checkpoint is spooled in parts of these (``recnet.checkpoint``) so that its bytes
    never sit in memory all at once; SQLite reads each part when it binds it (an adapter
    ``recnet.trace.sqlite_store`` registers), the memory store when it stores it."""

    __slots__ = ("length", "offset", "spool")

    def __init__(self, spool: Spool, offset: int, length: int) -> None:
        self.spool = spool
        self.offset = offset
        self.length = length

    def __len__(self) -> int:
        return self.length

    def read(self) -> bytes:
        file = self.spool.file
        file.seek(self.offset)
        data = file.read(self.length)
        if len(data) != self.length:
            raise TraceError(
                f"a spooled trace value lost bytes: read {len(data)} of {self.length}",
                "check the free space of the temporary directory (TMPDIR) and run again",
            )
        return data


def accepts(kind: str, value: Any) -> bool:
    """Whether a column of ``kind`` takes the (non-None) ``value``; subclasses included."""
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int | np.integer)
    if kind == "float":
        return isinstance(value, int | float | np.integer | np.floating) and type(value) is not bool
    if kind == "bool":
        if isinstance(value, bool | np.bool_):
            return True
        return isinstance(value, int | np.integer) and value in (0, 1)
    return isinstance(value, bytes | bytearray | memoryview | SpooledBlob)


@dataclass(frozen=True)
class TableSpec:
    """What the stores need to know about one table to check, complete and order its rows."""

    table: Table
    columns: tuple[str, ...]
    column_set: frozenset[str]
    primary_key: tuple[str, ...]
    autoincrement: str | None  # integer surrogate key the database assigns, if any
    required: frozenset[str]  # NOT NULL, no default, not assigned by the database
    not_null: frozenset[str]
    defaults: Mapping[str, Any]  # value used when a row leaves a nullable/defaulted column out
    insert_columns: tuple[str, ...]  # the order of a row tuple: every column but autoincrement
    kinds: tuple[str, ...]  # per insert column
    exact_types: tuple[frozenset[type], ...]  # per insert column, NoneType where nullable
    not_null_positions: tuple[int, ...]
    ordered: Callable[[Mapping[str, Any]], Values]  # complete dict → tuple in insert order

    @classmethod
    def of(cls, table: Table) -> TableSpec:
        pk = tuple(c.name for c in table.primary_key.columns)
        auto = _autoincrement_column(table)
        defaults: dict[str, Any] = {}
        required: set[str] = set()
        not_null: set[str] = set()
        for col in table.columns:
            if col.name == auto:
                continue
            default = col.default
            has_default = default is not None and getattr(default, "is_scalar", False)
            if has_default:
                defaults[col.name] = default.arg  # type: ignore[union-attr]
            elif col.nullable:
                defaults[col.name] = None
            if not col.nullable:
                not_null.add(col.name)
                if not has_default:
                    required.add(col.name)
        inserted = [c for c in table.columns if c.name != auto]
        names = tuple(c.name for c in inserted)
        kinds = tuple(column_kind(c) for c in inserted)
        getter = itemgetter(*names)
        return cls(
            table=table,
            columns=tuple(c.name for c in table.columns),
            column_set=frozenset(c.name for c in table.columns),
            primary_key=pk,
            autoincrement=auto,
            required=frozenset(required),
            not_null=frozenset(not_null),
            defaults=defaults,
            insert_columns=names,
            kinds=kinds,
            exact_types=tuple(
                EXACT_TYPES[k] | ({type(None)} if c.nullable else set())
                for k, c in zip(kinds, inserted, strict=True)
            ),
            not_null_positions=tuple(i for i, c in enumerate(inserted) if not c.nullable),
            ordered=getter if len(names) > 1 else lambda row: (getter(row),),
        )

    # -- shape (checked by add) ----------------------------------------------------------------

    def tuples(self, rows: Iterable[Mapping[str, Any] | Values]) -> list[Values]:
        """Rows as complete tuples in insert order; TraceError on a bad shape or a missing value.

        Checks unknown and missing columns, tuple length and NOT NULL columns; value types are
        checked at write time by ``check_values``.
        """
        rows = rows if type(rows) is list else list(rows)
        if not rows:
            return []
        if set(map(type, rows)) == {tuple}:
            out: list[Values] = rows  # type: ignore[assignment]
            if set(map(len, out)) != {len(self.insert_columns)}:
                self._wrong_width(out)
        else:
            out = [self._as_tuple(row) for row in rows]
        columns = list(zip(*out, strict=True))
        nulls = [self.insert_columns[i] for i in self.not_null_positions if None in columns[i]]
        if nulls:
            raise TraceError(
                f"row for trace table {self.table.name!r} lacks a value for NOT NULL "
                f"column(s) {', '.join(map(repr, nulls))}",
                "fill every required column (see the Trace schema section of the README)",
            )
        return out

    def normalise(self, row: Mapping[str, Any]) -> Row:
        """Return a complete, checked copy of the dict ``row`` (the runs table goes this way)."""
        [values] = self.tuples([row])
        self.check_values([values])
        return dict(zip(self.insert_columns, values, strict=True))

    def as_dict(self, values: Values) -> Row:
        """A row tuple back as a dict (without the database-assigned key)."""
        return dict(zip(self.insert_columns, values, strict=True))

    def _as_tuple(self, row: Any) -> Values:
        if type(row) is tuple:
            if len(row) != len(self.insert_columns):
                self._wrong_width([row])
            return row  # type: ignore[no-any-return]
        if type(row) is not dict and not isinstance(row, Mapping):
            raise TraceError(
                f"a row for trace table {self.table.name!r} must be a dict or a tuple, "
                f"got {type(row).__name__}",
                "pass dicts mapping column names to values, or tuples in the order "
                f"{', '.join(self.insert_columns)}",
            )
        keys = row.keys()
        if not keys <= self.column_set or not keys >= self.required:
            self._check_keys(row)
        if self.autoincrement is not None and row.get(self.autoincrement) is not None:
            raise TraceError(
                f"trace table {self.table.name!r} assigns {self.autoincrement!r} itself",
                f"leave {self.autoincrement!r} out of the row",
            )
        return self.ordered({**self.defaults, **row})

    def _check_keys(self, row: Mapping[str, Any]) -> None:
        name = self.table.name
        unknown = [key for key in row if key not in self.column_set]
        if unknown:
            raise TraceError(
                f"unknown column(s) {', '.join(map(repr, unknown))} for trace table {name!r}",
                f"columns of {name!r}: {', '.join(self.columns)}",
            )
        missing = sorted(self.required - row.keys())
        if missing:
            raise TraceError(
                f"row for trace table {name!r} lacks a value for NOT NULL column(s) "
                f"{', '.join(map(repr, missing))}",
                "fill every required column (see the Trace schema section of the README)",
            )

    def _wrong_width(self, rows: list[Values]) -> None:
        width = len(self.insert_columns)
        bad = next(len(row) for row in rows if len(row) != width)
        raise TraceError(
            f"a tuple row for trace table {self.table.name!r} has {bad} values, not {width}",
            f"give the values in the order {', '.join(self.insert_columns)}",
        )

    # -- values (checked before every write) ---------------------------------------------------

    def check_values(self, rows: list[Values]) -> None:
        """TraceError naming the column if a value is not of its column's kind."""
        for position, column in enumerate(zip(*rows, strict=True)):
            if not set(map(type, column)) <= self.exact_types[position]:
                self._check_column(position, column)

    def _check_column(self, position: int, column: tuple[Any, ...]) -> None:
        kind, name = self.kinds[position], self.insert_columns[position]
        nullable = type(None) in self.exact_types[position]
        for value in column:
            if (value is None and nullable) or (value is not None and accepts(kind, value)):
                continue
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise TraceError(
                f"trace write rejected a value: column {name!r} of trace table "
                f"{self.table.name!r} takes {WHAT[kind]}"
                f"{' or None' if nullable else ''}, got {shown} ({type(value).__name__})",
                "pass plain Python values (str, int, float, bool, bytes) in trace rows; "
                "see the Trace schema section of the README",
            )


def _autoincrement_column(table: Table) -> str | None:
    cols = list(table.primary_key.columns)
    if len(cols) != 1:
        return None
    col: Column[Any] = cols[0]
    if isinstance(col.type, Integer) and col.autoincrement in (True, "auto"):
        return col.name
    return None

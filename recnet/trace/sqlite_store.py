"""``SQLiteTraceStore``: the trace of a run in one SQLite file (SQLAlchemy 2 Core, WAL mode).

Pipeline position: the phase loop writes through it; ``recnet traces`` opens the same file
read-only (``read_only=True``) while the run is still going. WAL journaling lets readers (this
class, or plain ``sqlite3``) see every committed step without blocking the writer.

Transactions: SQLite's Python driver is put in autocommit mode and every SQLAlchemy transaction
starts with an explicit ``BEGIN IMMEDIATE`` (writer) or ``BEGIN`` (reader), so DDL in
migrations is transactional and a writer takes the write lock up front instead of failing on a
lock upgrade.

Inserts: rows arrive as checked tuples (``recnet.trace.rows``) and are bound straight to the
sqlite3 connection inside the SQLAlchemy transaction, several hundred rows per statement (see
``_insert``); schema, migrations, updates, deletes and reads go through SQLAlchemy Core.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from sqlalchemy import Connection, Engine, create_engine, delete, event, func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.pool import ConnectionPoolEntry

from recnet.errors import TraceError
from recnet.trace import migrations
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

BUSY_TIMEOUT_MS = 30_000
CACHE_KIB = 32_768  # the writer's page cache (SQLite's default is 2 MiB)
WAL_AUTOCHECKPOINT_PAGES = 10_000  # SQLite's default is 1000

# Phase code computes counts and ids with numpy. sqlite3 would store a numpy integer as an
# 8-byte BLOB (it supports the buffer protocol), silently, so numpy scalars are adapted to Python
# numbers (process-wide; harmless for any other sqlite3 user).
_NP_INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
for _np_type in _NP_INTS:
    sqlite3.register_adapter(_np_type, int)
sqlite3.register_adapter(np.float16, float)
sqlite3.register_adapter(np.float32, float)
sqlite3.register_adapter(np.bool_, int)
sqlite3.register_adapter(SpooledBlob, SpooledBlob.read)  # read from its file as it is bound


class SQLiteTraceStore(BufferedTraceStore):
    """A trace store backed by one SQLite file.

    ``SQLiteTraceStore(path)`` creates the file (and its folder) if needed and migrates it to the
    current schema; ``SQLiteTraceStore(path, read_only=True)`` opens an existing trace for
    reports and never writes, so reading a running run does not block it.
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int = 2000,
        *,
        read_only: bool = False,
        background: bool = False,
    ) -> None:
        super().__init__(batch_size, background=background and not read_only)
        self.path = Path(path)
        self._read_only = read_only
        self._where = str(self.path)
        self._snapshot: Connection | None = None
        if self.path.is_dir():
            raise TraceError(
                f"trace path {self._where} is a folder", "give the path of a .sqlite file"
            )
        if read_only:
            if not self.path.exists():
                raise TraceError(
                    f"trace file {self._where} does not exist",
                    "check the path; `recnet simulate` prints where it writes the trace",
                )
            url = URL.create(
                "sqlite",
                database=f"file:{quote(str(self.path.resolve()))}",
                query={"mode": "ro", "uri": "true"},
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            url = URL.create("sqlite", database=str(self.path))
        self._engine: Engine = create_engine(url)
        event.listen(self._engine, "connect", self._on_connect)
        event.listen(self._engine, "begin", self._on_begin)
        try:
            with self._transaction() as conn:
                if read_only:
                    self.schema_version = migrations.check_readable(conn, self._where)
                else:
                    migrations.migrate(conn, self._where)
                    self.schema_version = migrations.SCHEMA_VERSION
        except BaseException:
            self._engine.dispose()
            raise

    # -- connection setup ----------------------------------------------------------------------

    def _on_connect(self, dbapi_conn: sqlite3.Connection, record: ConnectionPoolEntry) -> None:
        # The driver must not emit BEGIN itself; _on_begin does (see module docstring).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not self._read_only:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
                # A step's inserts dirty index pages all over the messages indexes; a bigger page
                # cache and a checkpoint every ~40 MB of WAL (not ~4 MB) copy and sync each
                # page less often. Readers are unaffected.
                cursor.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                cursor.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        finally:
            cursor.close()

    def _on_begin(self, conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if self._read_only else "BEGIN IMMEDIATE")

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction (or the open snapshot); driver errors become TraceError."""
        if self._snapshot is not None:
            yield self._snapshot
            return
        try:
            with self._engine.begin() as conn:
                yield conn
        except (IntegrityError, sqlite3.IntegrityError) as err:  # sqlite3's own: from _write
            raise TraceError(
                f"trace write to {self._where} rejected: {getattr(err, 'orig', err)}",
                "each row must be recorded once; a resumed run must truncate_after() its last "
                "completed step first",
            ) from err
        except (DBAPIError, sqlite3.Error) as err:
            message = str(getattr(err, "orig", err))
            if "not a database" in message:
                raise TraceError(
                    f"{self._where} is not a recnet trace (not an SQLite database)",
                    "point recnet at a .sqlite file written by `recnet simulate`",
                ) from err
            raise TraceError(
                f"trace database {self._where} failed: {message}",
                "check the file is readable (and writable for a run) and the disk not full",
            ) from err
        except StatementError as err:  # a value SQLAlchemy cannot bind, e.g. 2 for a Boolean
            raise TraceError(
                f"trace write to {self._where} rejected a value: {err.orig}",
                "pass plain Python values (str, int, float, bool, None) in trace rows",
            ) from err

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Serve every read inside the block from one transaction: one consistent view.

        Reports use it so that counts and rows agree while a run keeps writing.
        """
        if self._snapshot is not None:
            yield
            return
        with self._transaction() as conn:
            self._snapshot = conn
            try:
                yield
            finally:
                self._snapshot = None

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def journal_mode(self) -> str:
        """``wal`` for a trace written by recnet."""
        with self._transaction() as conn:
            return migrations.journal_mode(conn)

    # -- runs ----------------------------------------------------------------------------------

    def create_run(self, row: Mapping[str, Any]) -> None:
        self._check_writable()
        self.wait()
        run = SPECS["runs"].normalise(row)
        with self._transaction() as conn:
            conn.execute(TABLES["runs"].insert(), [run])

    def update_run(self, run_id: str, **fields: Any) -> None:
        self._check_writable()
        self.wait()
        check_run_fields(fields)
        runs = TABLES["runs"]
        with self._transaction() as conn:
            exists = conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first()
            if exists is None:
                raise unknown_run(run_id)
            if fields:
                conn.execute(update(runs).where(runs.c.run_id == run_id).values(**fields))

    # -- writes --------------------------------------------------------------------------------

    def _write(self, batches: dict[str, list[Values]], marker: tuple[str, int] | None) -> None:
        with self._transaction() as conn:
            if "checkpoints" in batches:
                # keep only each run's newest checkpoint; deleted first, so that the new one
                # reuses the old one's pages (a file never holds two: 0.7 GB at 300k agents)
                for row in map(SPECS["checkpoints"].as_dict, batches["checkpoints"]):
                    for name in ("checkpoints", "checkpoint_parts"):
                        t = TABLES[name]
                        conn.execute(
                            delete(t).where(t.c.run_id == row["run_id"], t.c.step < row["step"])
                        )
            # Rows are checked tuples in insert order: bind them straight to sqlite3, without
            # SQLAlchemy's per-row parameter processing (it held the GIL for most of a write).
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                for name, rows in batches.items():
                    _insert(cursor, name, rows)
            finally:
                cursor.close()
            if marker is not None:
                run_id, step = marker
                runs = TABLES["runs"]
                result = conn.execute(
                    update(runs).where(runs.c.run_id == run_id).values(last_completed_step=step)
                )
                if result.rowcount == 0:
                    raise unknown_run(run_id)  # rolls the whole transaction back

    def _truncate(self, run_id: str, step: int) -> None:
        runs = TABLES["runs"]
        with self._transaction() as conn:
            last = conn.execute(
                select(runs.c.last_completed_step).where(runs.c.run_id == run_id)
            ).first()
            if last is None:
                raise unknown_run(run_id)
            for name in STEP_TABLES:
                t = TABLES[name]
                conn.execute(delete(t).where(t.c.run_id == run_id, t.c.step > step))
            for name in CREATED_STEP_TABLES:
                t = TABLES[name]
                conn.execute(delete(t).where(t.c.run_id == run_id, t.c.created_step > step))
            for name in RETIRED_STEP_TABLES:
                t = TABLES[name]
                conn.execute(
                    update(t)
                    .where(t.c.run_id == run_id, t.c.retired_step > step)
                    .values(retired_step=None)
                )
            for name in DECIDED_STEP_TABLES:
                t = TABLES[name]
                conn.execute(delete(t).where(t.c.run_id == run_id, t.c.decided_step > step))
            conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(last_completed_step=min(int(last[0]), step))
            )

    def _retire(self, run_id: str, router_ids: list[str], step: int) -> None:
        routers = TABLES["routers"]
        with self._transaction() as conn:
            conn.execute(
                update(routers)
                .where(routers.c.run_id == run_id, routers.c.router_id.in_(router_ids))
                .values(retired_step=step)
            )

    # -- reads ---------------------------------------------------------------------------------

    def read(
        self, table: str, run_id: str | None = None, *, limit: int | None = None, **equals: Any
    ) -> list[Row]:
        self._check_open()
        self.wait()
        check_filter(table, run_id, equals)
        t = TABLES[table]
        query = select(t).where(*self._conditions(table, run_id, equals))
        query = query.order_by(*(t.c[c] for c in SPECS[table].primary_key))
        if limit is not None:
            query = query.limit(max(limit, 0))
        with self._transaction() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def count(self, table: str, run_id: str | None = None, **equals: Any) -> int:
        self._check_open()
        self.wait()
        check_filter(table, run_id, equals)
        t = TABLES[table]
        query = select(func.count()).select_from(t).where(*self._conditions(table, run_id, equals))
        with self._transaction() as conn:
            return int(conn.execute(query).scalar_one())

    def runs(self) -> list[Row]:
        self._check_open()
        self.wait()
        t = TABLES["runs"]
        query = select(t).order_by(t.c.started_at, t.c.run_id)
        with self._transaction() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    @staticmethod
    def _conditions(table: str, run_id: str | None, equals: Mapping[str, Any]) -> list[Any]:
        t = TABLES[table]
        wanted = dict(equals)
        if run_id is not None:
            wanted["run_id"] = run_id
        return [t.c[col].is_(None) if v is None else t.c[col] == v for col, v in wanted.items()]

    def _release(self) -> None:
        self._engine.dispose()


def _insert(cursor: sqlite3.Cursor, name: str, rows: list[Values]) -> None:
    """Insert row tuples with few statements of many rows each (``INSERT ... VALUES (..), (..)``).

    Not ``executemany``: sqlite3 releases the GIL around every row it steps, and a writer thread
    then waits for the busy simulation thread to hand the GIL back (up to the 5 ms switch
    interval) once per row. A multi-row statement releases it once. Statements hold a power of
    two of rows, so each table needs only a few distinct (cached) statements.
    """
    if not rows:
        return
    variables = cursor.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    most = 1 << (max(1, min(MAX_ROWS_PER_INSERT, variables // len(rows[0]))).bit_length() - 1)
    if "bytes" in SPECS[name].kinds:  # SQLite copies every value it binds: one blob at a time
        most = 1
    start, n = 0, len(rows)
    while start < n:
        size = min(most, 1 << ((n - start).bit_length() - 1))
        params = list(chain.from_iterable(rows[start : start + size]))
        cursor.execute(_insert_sql(name, size), params)
        start += size


@functools.cache
def _insert_sql(name: str, n_rows: int) -> str:
    columns = SPECS[name].insert_columns
    names = ", ".join(f'"{c}"' for c in columns)
    one = f"({', '.join('?' * len(columns))})"
    return f'INSERT INTO "{name}" ({names}) VALUES {", ".join([one] * n_rows)}'


#: At most this many rows per INSERT statement (fewer when SQLite allows fewer bound variables).
MAX_ROWS_PER_INSERT = 1024

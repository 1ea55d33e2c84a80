"""Ordered, named schema migrations of the trace database.

Pipeline position: ``SQLiteTraceStore`` runs ``migrate`` when it opens a file for writing and
``check_readable`` when it opens one for reading. Each applied migration is recorded in the
``schema_migrations`` table, so a trace file says which schema it holds.

To change the schema: edit ``recnet/trace/schema.py`` and append a ``Migration`` with the next
version whose ``apply`` brings a version-(n-1) database to version n (``ALTER TABLE``, a new table
created with ``table.create(conn)``, ...). Never edit an applied migration: files in the wild have
already run it. ``_V1_TABLES`` fixes what version 1 creates, so a table added later is created by
its own migration only (version 1 also created a ``candidates`` table, which version 11 turns into
``candidate_lists`` and a view; new files go straight to the list form).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby

from sqlalchemy import Connection, Table, insert, select, text

from recnet.errors import TraceError
from recnet.trace import schema, views
from recnet.trace.records import validation_reason


@dataclass(frozen=True)
class Migration:
    """One step of the schema's history: ``apply`` runs inside the opening transaction."""

    version: int
    name: str
    apply: Callable[[Connection], None]


_V1_TABLES = (
    "schema_migrations",
    "runs",
    "steps",
    "agents",
    "interactions",
    "profile_versions",
    "routers",
    "router_versions",
    "messages",
    "filter_rule_versions",
    "predictions",
    "metrics",
    "llm_calls",
)


def _columns(conn: Connection, table: str) -> set[str]:
    """The column names ``table`` has in the file (empty when it has no such table)."""
    return {str(r[1]) for r in conn.exec_driver_sql(f'PRAGMA table_info("{table}")')}


def _initial(conn: Connection) -> None:
    tables = [schema.metadata.tables[name] for name in _V1_TABLES]
    schema.metadata.create_all(conn, tables=tables)


_V2_TABLES = ("gradients", "optimizations", "router_operations", "backward_steps")


def _backward_lineage(conn: Connection) -> None:
    """Tables of the backward phase: gradients, optimisations, router operations, step summary."""
    tables = [schema.metadata.tables[name] for name in _V2_TABLES]
    schema.metadata.create_all(conn, tables=tables)


def _checkpoints(conn: Connection) -> None:
    """World checkpoints for ``recnet simulate --resume``."""
    schema.checkpoints.create(conn)


def _checkpoint_parts(conn: Connection) -> None:
    """Checkpoints above one SQLite value's limit (1 GB) are stored in parts."""
    schema.checkpoint_parts.create(conn)


def _links_and_views(conn: Connection) -> None:
    """Declared foreign keys (tables written before them are rebuilt with them) and the views of
    ``recnet.trace.views``."""
    existing = set(table_names(conn))
    # Parents before children: a table is renamed away only while nothing declares a key to it.
    for table in schema.metadata.sorted_tables:
        if table.name not in existing or not table.foreign_key_constraints:
            continue
        if conn.exec_driver_sql(f'PRAGMA foreign_key_list("{table.name}")').first() is not None:
            continue  # created by this version, keys included
        _rebuild(conn, table)
    for statement in views.VIEWS.values():
        conn.exec_driver_sql(statement)


def _rebuild(conn: Connection, table: Table) -> None:
    """Recreate ``table`` from the schema (keys and indexes included), keeping its rows."""
    old = f"_old_{table.name}"
    indexes = conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        (table.name,),
    ).fetchall()
    for (index,) in indexes:
        conn.exec_driver_sql(f'DROP INDEX "{index}"')
    kept = _columns(conn, table.name)
    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" RENAME TO "{old}"')
    table.create(conn)
    # Columns a later migration adds are created now (from today's schema) and left empty.
    columns = ", ".join(f'"{column.name}"' for column in table.columns if column.name in kept)
    conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({columns}) SELECT {columns} FROM "{old}"')
    conn.exec_driver_sql(f'DROP TABLE "{old}"')


def _trace_levels(conn: Connection) -> None:
    """Trace levels: the level a run recorded messages at, and per-router fate counts."""
    columns = _columns(conn, "runs")
    if "trace_messages" not in columns:  # version 1 creates ``runs`` from today's schema
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN trace_messages VARCHAR")
    schema.message_counts.create(conn)


def _prequential(conn: Connection) -> None:
    """Test-then-train ranks of training interactions (``evaluation.prequential``)."""
    schema.prequential.create(conn)


def _metrics_flag(conn: Connection) -> None:
    """``metrics.flag``: marks values produced by fallback or replayed-from-elsewhere answers."""
    columns = _columns(conn, "metrics")
    if not columns:  # a file without the table: create it as today's schema has it
        schema.metrics.create(conn)
    elif "flag" not in columns:  # version 1 creates ``metrics`` from today's schema
        conn.exec_driver_sql("ALTER TABLE metrics ADD COLUMN flag VARCHAR")


def _optimization_reason(conn: Connection) -> None:
    """``optimizations.reason``: why the safeguard kept or rolled back each optimisation.

    Rows written before it get theirs from ``status``, ``valid_before`` / ``valid_after`` and the
    run's ``backward.epsilon`` (the scenario default 0.005 when the run's scenario lacks it).
    """
    columns = _columns(conn, "optimizations")
    if not columns:  # a file without the table: create it as today's schema has it
        schema.optimizations.create(conn)
        return
    if "reason" not in columns:  # version 2 creates ``optimizations`` from today's schema
        conn.exec_driver_sql("ALTER TABLE optimizations ADD COLUMN reason TEXT")
    epsilons: dict[str, float] = {}
    for run_id, scenario_json in conn.exec_driver_sql("SELECT run_id, scenario_json FROM runs"):
        try:
            backward = json.loads(scenario_json or "{}").get("backward") or {}
            epsilons[str(run_id)] = float(backward.get("epsilon", 0.005))
        except (ValueError, TypeError, AttributeError):
            epsilons[str(run_id)] = 0.005
    rows = conn.exec_driver_sql(
        "SELECT run_id, optimization_id, status, valid_before, valid_after FROM optimizations "
        "WHERE reason IS NULL"
    ).fetchall()
    for run_id, optimization_id, status, before, after in rows:
        if before is None or after is None:
            reason = str(status).replace("_", " ") + ": no validation recorded"
        else:
            epsilon = epsilons.get(str(run_id), 0.005)
            reason = validation_reason(status == "kept", before, after, epsilon)
        conn.exec_driver_sql(
            "UPDATE optimizations SET reason = ? WHERE run_id = ? AND optimization_id = ?",
            (reason, run_id, optimization_id),
        )


def _profile_levels(conn: Connection) -> None:
    """``runs.trace_profiles``: the level a run recorded profile versions at."""
    columns = _columns(conn, "runs")
    if "trace_profiles" not in columns:  # version 1 creates ``runs`` from today's schema
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN trace_profiles VARCHAR")


#: Candidate rows converted per batch by ``_candidate_lists``.
_CONVERT_ROWS = 100_000


def _candidate_lists(conn: Connection) -> None:
    """Candidate lists one row per list (``candidate_lists``); the per-candidate ``candidates``
    table of earlier files is converted, list by list in position order, and replaced by the view
    of the same name and columns."""
    schema.candidate_lists.create(conn)
    kind = conn.exec_driver_sql("SELECT type FROM sqlite_master WHERE name = 'candidates'").scalar()
    if kind == "table":
        rows = conn.exec_driver_sql(
            "SELECT run_id, split, user_id, item_id, is_positive FROM candidates "
            "ORDER BY run_id, split, user_id, position"
        )
        lists: list[dict[str, object]] = []
        for (run_id, split, user_id), group in groupby(rows, key=lambda r: (r[0], r[1], r[2])):
            items = list(group)
            positive = next((i for i, r in enumerate(items) if r[4]), None)
            lists.append(
                {
                    "run_id": run_id,
                    "split": split,
                    "user_id": user_id,
                    "items_json": json.dumps([r[3] for r in items]),
                    "positive": positive,
                }
            )
            if len(lists) >= _CONVERT_ROWS:
                conn.execute(insert(schema.candidate_lists), lists)
                lists = []
        if lists:
            conn.execute(insert(schema.candidate_lists), lists)
        conn.exec_driver_sql("DROP TABLE candidates")
    conn.exec_driver_sql(views.CANDIDATES)


MIGRATIONS: list[Migration] = [
    Migration(1, "initial", _initial),
    Migration(2, "backward_lineage", _backward_lineage),
    Migration(3, "checkpoints", _checkpoints),
    Migration(4, "links_and_views", _links_and_views),
    Migration(5, "trace_levels", _trace_levels),
    Migration(6, "prequential", _prequential),
    Migration(7, "metrics_flag", _metrics_flag),
    Migration(8, "optimization_reason", _optimization_reason),
    Migration(9, "checkpoint_parts", _checkpoint_parts),
    Migration(10, "profile_levels", _profile_levels),
    Migration(11, "candidate_lists", _candidate_lists),
]

#: The schema version this code writes and understands.
SCHEMA_VERSION: int = MIGRATIONS[-1].version

_UPGRADE = "upgrade recnet (pip install -U recnet) to read it"


def table_names(conn: Connection) -> list[str]:
    """Tables in the database, SQLite's own excluded."""
    rows = conn.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return sorted(str(row[0]) for row in rows)


def applied(conn: Connection, where: str = "this file") -> dict[int, str]:
    """Versions and names recorded in ``schema_migrations``.

    Raises TraceError when the database is not a recnet trace: tables without a
    ``schema_migrations`` table, a foreign ``schema_migrations`` or migration names that are not
    ours. Returns an empty dict for an empty database.
    """
    names = table_names(conn)
    if not names:
        return {}
    not_ours = TraceError(
        f"{where} is an SQLite database but not a recnet trace "
        f"(tables: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})",
        "point recnet at a .sqlite file written by `recnet simulate`, or pick a new path",
    )
    if "schema_migrations" not in names or "runs" not in names:
        raise not_ours
    columns = _columns(conn, "schema_migrations")
    if not {"version", "name", "applied_at"} <= columns:
        raise not_ours
    table = schema.schema_migrations
    recorded = {
        int(row.version): str(row.name)
        for row in conn.execute(select(table.c.version, table.c.name))
    }
    known = {m.version: m.name for m in MIGRATIONS}
    if not recorded or any(known.get(v, name) != name for v, name in recorded.items()):
        raise not_ours
    newest = max(recorded)
    if newest > SCHEMA_VERSION:
        raise TraceError(
            f"{where} has trace schema version {newest} ({recorded[newest]!r}); this recnet "
            f"knows versions up to {SCHEMA_VERSION}",
            _UPGRADE,
        )
    return recorded


def migrate(conn: Connection, where: str = "this file") -> list[Migration]:
    """Apply every migration the database lacks, in order, and record it. Returns those applied.

    Run it inside a transaction: either all pending migrations land or none does.
    """
    done = applied(conn, where)
    pending = [m for m in MIGRATIONS if m.version not in done]
    for migration in pending:
        migration.apply(conn)
        conn.execute(
            insert(schema.schema_migrations).values(
                version=migration.version,
                name=migration.name,
                applied_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
        )
    return pending


def check_readable(conn: Connection, where: str = "this file") -> int:
    """The database's schema version; TraceError if it is not a recnet trace we can read."""
    done = applied(conn, where)
    if not done:
        raise TraceError(
            f"{where} is empty, not a recnet trace",
            "point recnet at a .sqlite file written by `recnet simulate`",
        )
    version = max(done)
    if version < SCHEMA_VERSION:
        raise TraceError(
            f"{where} has trace schema version {version}; this recnet expects {SCHEMA_VERSION}",
            "open it once for writing (SQLiteTraceStore(path)) to migrate it",
        )
    return version


def check_migrations(migrations: list[Migration] = MIGRATIONS) -> None:
    """Raise ValueError if versions are not 1, 2, 3, ... or names repeat (a bug in recnet)."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise ValueError(f"migration versions must be 1..n in order, got {versions}")
    names = [m.name for m in migrations]
    if len(set(names)) != len(names):
        raise ValueError(f"migration names must be unique, got {names}")


def journal_mode(conn: Connection) -> str:
    """The database's journal mode (``wal`` for a trace written by recnet)."""
    return str(conn.execute(text("PRAGMA journal_mode")).scalar_one())


check_migrations()

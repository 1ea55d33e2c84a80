"""``optimizations.reason`` (trace migration 8): why the safeguard kept or rolled back an edit."""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from pathlib import Path

from sqlalchemy import Connection, create_engine

from recnet.phases.backward.safeguard import paired_standard_error
from recnet.trace import migrations, schema
from recnet.trace.records import validation_reason
from recnet.trace.sqlite_store import SQLiteTraceStore


def test_the_reason_names_the_change_and_the_epsilon() -> None:
    assert validation_reason(True, 0.61, 0.63, 0.01) == "kept: valid NDCG@10 0.6100 -> 0.6300"
    assert validation_reason(False, 0.63, 0.58, 0.01) == (
        "rolled back: valid NDCG@10 fell 0.6300 -> 0.5800 (> epsilon 0.01)"
    )
    assert validation_reason(True, 0.63, 0.625, 0.01) == (
        "kept: valid NDCG@10 fell 0.6300 -> 0.6250 (within epsilon 0.01)"
    )


def test_with_rollback_z_the_reason_says_how_many_standard_errors_the_fall_was() -> None:
    assert validation_reason(False, 0.63, 0.58, 0.01, standard_errors=2.5, z=1.645) == (
        "rolled back: valid NDCG@10 fell 0.6300 -> 0.5800 (> epsilon 0.01, 2.50 standard errors "
        "> z 1.645)"
    )
    assert validation_reason(True, 0.63, 0.58, 0.01, standard_errors=1.2, z=1.645) == (
        "kept: valid NDCG@10 fell 0.6300 -> 0.5800 (> epsilon 0.01, 1.20 standard errors "
        "<= z 1.645)"
    )


def test_the_paired_standard_error_counts_the_users_that_did_not_change() -> None:
    changes = [-0.3, 0.1, -0.2]
    everyone = [*changes, 0.0, 0.0, 0.0, 0.0]
    expected = statistics.stdev(everyone) / math.sqrt(len(everyone))
    assert math.isclose(paired_standard_error(changes, len(everyone)), expected)
    assert paired_standard_error([0.0, 0.0], 5) == 0.0
    assert paired_standard_error([-0.1], 1) == 0.0  # one user: no spread to measure


def apply_migrations(conn: Connection, version: int) -> None:
    """Bring an empty database to schema ``version`` as that version's recnet would have."""
    for migration in migrations.MIGRATIONS[:version]:
        migration.apply(conn)
        conn.execute(
            schema.schema_migrations.insert().values(
                version=migration.version, name=migration.name, applied_at="2026-12-01"
            )
        )


def _version_7_trace(path: Path) -> None:
    """A trace as schema version 7 wrote it: ``optimizations`` without ``reason``, two rows."""
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        apply_migrations(conn, 7)
        conn.exec_driver_sql("ALTER TABLE optimizations DROP COLUMN reason")
        scenario = json.dumps({"backward": {"epsilon": 0.02}})
        conn.exec_driver_sql(
            "INSERT INTO runs (run_id, name, seed, scenario_json, versions_json, brain, status, "
            "started_at, last_completed_step) VALUES ('r1', 'old', 0, ?, '{}', 'offline', "
            "'finished', 'then', 3)",
            (scenario,),
        )
        for oid, status, before, after in [(1, "kept", 0.5, 0.51), (2, "rolled_back", 0.5, 0.4)]:
            conn.exec_driver_sql(
                "INSERT INTO optimizations (run_id, optimization_id, step, batch, module, "
                "target_id, operation, gradient_ids_json, before_json, after_json, status, "
                "valid_before, valid_after) VALUES ('r1', ?, 1, ?, 'filter_memory', 'u:1', "
                "'rules', '[]', '{}', '{}', ?, ?, ?)",
                (oid, oid, status, before, after),
            )
    engine.dispose()


def test_a_version_7_trace_gains_the_reason_column_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _version_7_trace(path)
    db = sqlite3.connect(path)
    assert "reason" not in {r[1] for r in db.execute("PRAGMA table_info(optimizations)")}
    db.close()
    SQLiteTraceStore(path).close()  # opening for writing migrates
    db = sqlite3.connect(path)
    assert "reason" in {r[1] for r in db.execute("PRAGMA table_info(optimizations)")}
    assert db.execute("SELECT max(version) FROM schema_migrations").fetchone() == (
        migrations.SCHEMA_VERSION,
    )
    reasons = db.execute("SELECT reason FROM optimizations ORDER BY optimization_id").fetchall()
    db.close()
    assert reasons == [
        ("kept: valid NDCG@10 0.5000 -> 0.5100",),
        ("rolled back: valid NDCG@10 fell 0.5000 -> 0.4000 (> epsilon 0.02)",),
    ]

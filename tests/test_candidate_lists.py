"""Candidate lists one row per list (schema version 11): a run's lists read through the
``candidates`` view are the candidate sets it evaluated on, and a trace written before version 11
has its per-candidate table converted, rows and order kept, when it is opened for writing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine

from recnet.trace import migrations
from recnet.trace.sqlite_store import SQLiteTraceStore
from tests.test_rollback_reason import apply_migrations
from tests.test_trace_levels import run

OLD_CANDIDATES = """
CREATE TABLE candidates (
    run_id VARCHAR NOT NULL REFERENCES runs (run_id), split VARCHAR NOT NULL,
    user_id VARCHAR NOT NULL, position INTEGER NOT NULL, item_id VARCHAR NOT NULL,
    is_positive BOOLEAN NOT NULL, PRIMARY KEY (run_id, split, user_id, position)
) WITHOUT ROWID
"""


def test_a_runs_candidates_view_holds_each_list_in_order_with_its_held_out_item(
    tmp_path: Path,
) -> None:
    _, db, _ = run(tmp_path, "all")
    lists = db.execute("SELECT count(*) FROM candidate_lists").fetchone()[0]
    per_candidate = db.execute(
        "SELECT split, user_id, count(*), sum(is_positive), min(position), max(position) "
        "FROM candidates GROUP BY 1, 2"
    ).fetchall()
    assert lists == len(per_candidate) > 0
    # every list: positions 0..n-1, exactly one held-out item (the test or validation truth)
    assert all(
        n >= 10 and pos == 1 and lo == 0 and hi == n - 1 for _, _, n, pos, lo, hi in per_candidate
    )
    truth = dict(
        db.execute(
            "SELECT user_id, true_item FROM predictions WHERE split = 'test' AND model = 'recnet'"
        ).fetchall()
    )
    positives = dict(
        db.execute(
            "SELECT user_id, item_id FROM candidates WHERE split = 'test' AND is_positive"
        ).fetchall()
    )
    assert positives == truth


def _version_10_trace(path: Path) -> None:
    """A trace as schema version 10 wrote it: candidates one row each, two users' lists."""
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        apply_migrations(conn, 10)
        conn.exec_driver_sql(OLD_CANDIDATES)
        conn.exec_driver_sql(
            "INSERT INTO runs (run_id, name, seed, scenario_json, versions_json, brain, status, "
            "started_at, last_completed_step) VALUES ('r1', 'old', 0, '{}', '{}', 'offline', "
            "'finished', 'then', 3)"
        )
        for split, user, items, positive in [
            ("test", "7", ["30", "10", "20"], 1),
            ("valid", "7", ["5", "6"], 0),
            ("test", "3", ["1", "2"], None),
        ]:
            for position, item in reversed(list(enumerate(items))):  # stored out of order
                conn.exec_driver_sql(
                    "INSERT INTO candidates VALUES ('r1', ?, ?, ?, ?, ?)",
                    (split, user, position, item, position == positive),
                )
    engine.dispose()


def test_a_version_10_trace_has_its_candidates_converted_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _version_10_trace(path)
    query = "SELECT split, user_id, position, item_id, is_positive FROM candidates ORDER BY 1, 2, 3"
    before = sqlite3.connect(path).execute(query).fetchall()
    SQLiteTraceStore(path).close()  # opening for writing migrates
    db = sqlite3.connect(path)
    assert db.execute("SELECT max(version) FROM schema_migrations").fetchone() == (
        migrations.SCHEMA_VERSION,
    )
    kinds = dict(db.execute("SELECT name, type FROM sqlite_master WHERE name LIKE 'candidate%'"))
    assert kinds == {"candidates": "view", "candidate_lists": "table"}
    assert db.execute(query).fetchall() == before
    assert db.execute(
        "SELECT split, user_id, items_json, positive FROM candidate_lists ORDER BY 1, 2"
    ).fetchall() == [
        ("test", "3", '["1", "2"]', None),
        ("test", "7", '["30", "10", "20"]', 1),
        ("valid", "7", '["5", "6"]', 0),
    ]

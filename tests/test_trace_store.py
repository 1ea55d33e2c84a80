"""Trace store contract (memory and SQLite alike) plus SQLite specifics: WAL, migrations, files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recnet.errors import TraceError
from recnet.trace import migrations, schema
from recnet.trace.memory_store import MemoryTraceStore
from recnet.trace.sqlite_store import SQLiteTraceStore
from recnet.trace.store import TraceStore

MakeStore = Callable[..., TraceStore]


def run_row(run_id: str = "r1", started_at: str = "2026-01-01T00:00:00", **extra: Any) -> dict:
    row = {
        "run_id": run_id,
        "name": f"name-{run_id}",
        "seed": 7,
        "scenario_json": "{}",
        "versions_json": "{}",
        "brain": "offline",
        "status": "running",
        "started_at": started_at,
    }
    row.update(extra)
    return row


def message(
    step: int,
    client: str = "u:1",
    run_id: str = "r1",
    status: str = "buffered",
    decided_step: int | None = None,
    rule_id: str | None = None,
) -> dict:
    row = {
        "run_id": run_id,
        "step": step,
        "router_id": "r:0",
        "client_id": client,
        "score": 0.5 + step / 10,
        "status": status,
    }
    if decided_step is not None:
        row.update(decided_step=decided_step, rule_id=rule_id)
    return row


def step_row(step: int, run_id: str = "r1") -> dict:
    counts = dict.fromkeys(
        (
            "n_interactions",
            "n_correct",
            "n_changed_attributes",
            "n_routers_updated",
            "n_messages",
            "n_accepted",
            "n_rejected",
            "n_dropped",
        ),
        step,
    )
    return {"run_id": run_id, "step": step, "started_at": "t", "finished_at": "t", **counts}


def interaction(seq: int, step: int, run_id: str = "r1") -> dict:
    return {
        "run_id": run_id,
        "seq": seq,
        "step": step,
        "user_id": "u:1",
        "item_id": f"i:{seq}",
        "negative_id": "i:99",
        "chosen_id": f"i:{seq}",
        "correct": True,
    }


@pytest.fixture(params=["memory", "sqlite", "sqlite-background"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    opened: list[TraceStore] = []

    def make(batch_size: int = 2000) -> TraceStore:
        store: TraceStore
        if request.param == "memory":
            store = MemoryTraceStore(batch_size=batch_size)
        else:
            store = SQLiteTraceStore(
                tmp_path / "trace.sqlite",
                batch_size=batch_size,
                background=request.param == "sqlite-background",
            )
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> TraceStore:
    s = make_store()
    s.create_run(run_row())
    return s


# -- contract: every store ------------------------------------------------------------------------


def test_stores_satisfy_protocol(store: TraceStore) -> None:
    assert isinstance(store, TraceStore)


def test_create_run_fills_defaults_and_update_run_changes_fields(store: TraceStore) -> None:
    [run] = store.runs()
    assert run["run_id"] == "r1"
    assert run["last_completed_step"] == -1
    assert run["finished_at"] is None
    store.update_run("r1", status="finished", finished_at="2026-01-02T00:00:00", note="done")
    [run] = store.runs()
    assert (run["status"], run["finished_at"], run["note"]) == (
        "finished",
        "2026-01-02T00:00:00",
        "done",
    )


def test_run_errors(store: TraceStore) -> None:
    with pytest.raises(TraceError, match="no run 'nope'"):
        store.update_run("nope", status="failed")
    with pytest.raises(TraceError, match="'colour'"):
        store.update_run("r1", colour="red")
    with pytest.raises(TraceError, match="cannot be NULL"):
        store.update_run("r1", status=None)
    with pytest.raises(TraceError, match=r"duplicate|UNIQUE"):
        store.create_run(run_row())
    with pytest.raises(TraceError, match="'brain'"):
        store.create_run({k: v for k, v in run_row("r2").items() if k != "brain"})
    assert [r["run_id"] for r in store.runs()] == ["r1"]


def test_runs_ordered_by_start(make_store: MakeStore) -> None:
    store = make_store()
    store.create_run(run_row("late", started_at="2026-03-01T00:00:00"))
    store.create_run(run_row("early", started_at="2026-01-01T00:00:00"))
    assert [r["run_id"] for r in store.runs()] == ["early", "late"]


def test_add_flush_read_round_trip(store: TraceStore) -> None:
    store.add("messages", [message(0, "u:1"), message(0, "i:2"), message(1, "u:1")])
    store.add(
        "profile_versions",
        [
            {
                "run_id": "r1",
                "agent_id": "u:1",
                "step": -1,
                "kind": "original",
                "text": "likes comedies",
                "attributes_json": '{"genre:comedy": 1.0}',
                "reason": "init",
            }
        ],
    )
    assert store.read("messages") == []  # buffered rows are not visible before a flush
    store.flush()
    rows = store.read("messages", "r1")
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[1] == {
        "id": 2,
        "run_id": "r1",
        "step": 0,
        "router_id": "r:0",
        "client_id": "i:2",
        "score": 0.5,
        "status": "buffered",
        "rule_id": None,
        "decided_step": None,
    }
    assert [r["step"] for r in store.read("messages", "r1", client_id="u:1")] == [0, 1]
    assert store.read("messages", "other-run") == []
    assert store.count("messages", "r1", step=0) == 2
    assert store.read("messages", limit=1)[0]["id"] == 1
    assert len(store.read("messages", decided_step=None)) == 3
    [profile] = store.read("profile_versions", "r1", agent_id="u:1")
    assert profile["text"] == "likes comedies"
    assert profile["attributes_json"] == '{"genre:comedy": 1.0}'


def test_read_orders_by_primary_key(store: TraceStore) -> None:
    store.add("interactions", [interaction(3, 0), interaction(1, 0), interaction(2, 0)])
    store.flush()
    rows = store.read("interactions", "r1")
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["correct"] is True


def test_auto_flush_when_buffer_reaches_batch_size_across_tables(make_store: MakeStore) -> None:
    store = make_store(batch_size=5)
    store.create_run(run_row())
    store.add("messages", [message(0) for _ in range(3)])
    assert store.count("messages", "r1") == 0
    store.add("interactions", [interaction(0, 0)])
    assert store.count("interactions", "r1") == 0
    store.add("interactions", [interaction(1, 0)])  # 5 rows in total: flushed
    assert (store.count("messages", "r1"), store.count("interactions", "r1")) == (3, 2)
    store.add("messages", [message(1) for _ in range(12)])
    assert store.count("messages", "r1") == 3 + 10  # two full batches; two rows still buffered
    store.flush()
    assert store.count("messages", "r1") == 15


def test_commit_step_writes_rows_and_marker_together(store: TraceStore) -> None:
    store.add("steps", [step_row(0)])
    store.add("messages", [message(0), message(0)])
    store.commit_step("r1", 0)
    assert store.count("messages", "r1") == 2
    assert store.runs()[0]["last_completed_step"] == 0


def test_commit_step_is_all_or_nothing(store: TraceStore) -> None:
    store.add("steps", [step_row(0)])
    store.commit_step("r1", 0)
    # A duplicate key in the batch rejects the whole step: no rows, no marker.
    store.add("messages", [message(1), message(1)])
    store.add("steps", [step_row(0)])
    with pytest.raises(TraceError, match=r"duplicate|UNIQUE"):
        store.commit_step("r1", 1)
        store.wait()  # a background writer reports the failure here
    assert store.count("messages", "r1") == 0
    assert store.runs()[0]["last_completed_step"] == 0
    # An unknown run rejects the rows too.
    store.add("messages", [message(1)])
    with pytest.raises(TraceError, match="no run 'ghost'"):
        store.commit_step("ghost", 1)
        store.wait()  # a background writer reports the failure here
    assert store.count("messages") == 0
    # The failed rows do not linger in the buffer.
    store.add("steps", [step_row(1)])
    store.commit_step("r1", 1)
    assert store.count("steps", "r1") == 2
    assert store.runs()[0]["last_completed_step"] == 1


def _fill_four_steps(store: TraceStore, run_id: str = "r1") -> None:
    for step in range(4):
        store.add("steps", [step_row(step, run_id)])
        store.add("interactions", [interaction(step, step, run_id)])
        store.add(
            "messages",
            [
                message(step, "u:1", run_id),  # decided the step after
                message(step, "i:2", run_id),  # never decided
            ],
        )
        store.add(
            "metrics",
            [
                {
                    "run_id": run_id,
                    "step": step,
                    "split": "test",
                    "model": "recnet",
                    "metric": "ndcg@10",
                    "value": step / 10,
                }
            ],
        )
        store.add(
            "routers",
            [{"run_id": run_id, "router_id": f"r:{step}", "created_step": step, "origin": "init"}],
        )
        store.add(
            "agents",
            [{"run_id": run_id, "agent_id": f"u:{step}", "kind": "user", "created_step": step}],
        )
        store.commit_step(run_id, step)


def test_truncate_after_removes_later_rows_and_later_decisions(make_store: MakeStore) -> None:
    store = make_store()
    for rid in ("r1", "r2"):
        store.create_run(run_row(rid))
        store.add("steps", [step_row(s, rid) for s in range(4)])
        # Messages to u:1 are decided the step after they were sent; those to i:2 never are.
        store.add(
            "messages", [message(s, "u:1", rid, "accepted", s + 1, "min_rel") for s in range(4)]
        )
        store.add("messages", [message(s, "i:2", rid) for s in range(4)])
        store.add(
            "routers",
            [
                {
                    "run_id": rid,
                    "router_id": "r:old",
                    "created_step": 0,
                    "retired_step": 3,
                    "origin": "init",
                },
                {"run_id": rid, "router_id": "r:new", "created_step": 2, "origin": "split:r:old"},
            ],
        )
        store.add("agents", [{"run_id": rid, "agent_id": "i:9", "kind": "item", "created_step": 3}])
        store.commit_step(rid, 3)

    store.truncate_after("r1", 1)

    assert [r["step"] for r in store.read("steps", "r1")] == [0, 1]
    u1 = store.read("messages", "r1", client_id="u:1")
    # A message row is written when the message is decided; one decided after the truncation
    # point is deleted, since the resumed run decides it again from the restored buffer.
    assert [(m["step"], m["status"], m["decided_step"], m["rule_id"]) for m in u1] == [
        (0, "accepted", 1, "min_rel"),
    ]
    assert [m["step"] for m in store.read("messages", "r1", client_id="i:2")] == [0, 1]
    routers = {r["router_id"]: r for r in store.read("routers", "r1")}
    assert set(routers) == {"r:old"}
    assert routers["r:old"]["retired_step"] is None
    assert store.read("agents", "r1") == []
    r1 = next(r for r in store.runs() if r["run_id"] == "r1")
    assert r1["last_completed_step"] == 1
    # The other run is untouched.
    assert store.count("steps", "r2") == 4
    assert store.count("messages", "r2", status="accepted") == 4
    assert store.count("agents", "r2") == 1
    # Resuming re-records step 2 without duplicate keys.
    store.add("steps", [step_row(2)])
    store.add("routers", [{"run_id": "r1", "router_id": "r:new", "created_step": 2, "origin": "x"}])
    store.commit_step("r1", 2)
    assert [r["step"] for r in store.read("steps", "r1")] == [0, 1, 2]


def test_truncate_after_covers_every_step_table(store: TraceStore) -> None:
    _fill_four_steps(store)
    store.truncate_after("r1", 2)
    for table in ("steps", "interactions", "messages", "metrics"):
        assert {r["step"] for r in store.read(table, "r1")} == {0, 1, 2}, table
    assert [r["router_id"] for r in store.read("routers", "r1")] == ["r:0", "r:1", "r:2"]
    with pytest.raises(TraceError, match="no run 'ghost'"):
        store.truncate_after("ghost", 0)


def test_unknown_table_or_column_is_a_clear_error(store: TraceStore) -> None:
    with pytest.raises(TraceError, match="unknown trace table 'mesages'") as info:
        store.add("mesages", [message(0)])
    assert "messages" in (info.value.remedy or "")
    with pytest.raises(TraceError, match=r"unknown column.*'colour'.*'messages'"):
        store.add("messages", [{**message(0), "colour": "red"}])
    with pytest.raises(TraceError, match=r"NOT NULL.*'score'"):
        store.add("messages", [{k: v for k, v in message(0).items() if k != "score"}])
    with pytest.raises(TraceError, match=r"NOT NULL.*'status'"):
        store.add("messages", [{**message(0), "status": None}])
    with pytest.raises(TraceError, match="create_run"):
        store.add("runs", [run_row("r9")])
    with pytest.raises(TraceError, match="single dict"):
        store.add("messages", message(0))  # type: ignore[arg-type]
    with pytest.raises(TraceError, match="unknown trace table"):
        store.read("nope")
    with pytest.raises(TraceError, match=r"cannot filter.*'colour'"):
        store.read("messages", colour="red")
    # A rejected add leaves nothing behind, not even its valid rows.
    with pytest.raises(TraceError):
        store.add("messages", [message(0), {"bad": 1}])
    store.flush()
    assert store.count("messages") == 0


def test_batch_size_must_be_positive(make_store: MakeStore) -> None:
    with pytest.raises(TraceError, match="batch_size"):
        make_store(batch_size=0)


def test_close_flushes_and_closed_store_refuses(make_store: MakeStore) -> None:
    store = make_store()
    store.create_run(run_row())
    with store:
        store.add("messages", [message(0)])
    with pytest.raises(TraceError, match="closed"):
        store.add("messages", [message(0)])
    with pytest.raises(TraceError, match="closed"):
        store.read("messages")
    store.close()  # twice is fine


# -- SQLite specifics -----------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "trace.sqlite"


def test_sqlite_uses_wal(db: Path) -> None:
    with SQLiteTraceStore(db) as store:
        assert store.journal_mode == "wal"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_sqlite_records_migrations_once_and_creates_every_table(db: Path) -> None:
    SQLiteTraceStore(db).close()
    SQLiteTraceStore(db).close()  # reopening applies nothing new
    conn = sqlite3.connect(db)
    try:
        recorded = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert recorded == [(m.version, m.name) for m in migrations.MIGRATIONS]
    assert recorded[0] == (1, "initial")
    assert set(schema.metadata.tables) <= tables


def test_sqlite_stores_small_row_tables_without_a_second_index(db: Path) -> None:
    # one B-tree keyed by the primary key, e.g. (run, split, user): no autoindex beside it
    with SQLiteTraceStore(db) as store:
        store.create_run(run_row())
        rows = [
            {
                "run_id": "r1",
                "split": "test",
                "user_id": u,
                "items_json": f'["i{u}", "i0"]',
                "positive": 0,
            }
            for u in ("u2", "u1")
        ]
        store.add("candidate_lists", rows)
        store.flush()
        back = store.read("candidate_lists", "r1")
    assert [(r["user_id"], r["items_json"]) for r in back] == [
        ("u1", '["iu1", "i0"]'),
        ("u2", '["iu2", "i0"]'),
    ]
    conn = sqlite3.connect(db)
    try:
        for table in ("candidate_lists", "message_counts", "interactions"):  # many small rows
            (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name=?", (table,)).fetchone()
            indexes = conn.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name=?", (table,)
            ).fetchall()
            assert sql.rstrip().endswith("WITHOUT ROWID") and indexes == [], table
        # the view shows the lists one row per candidate, as the table of earlier traces did
        shown = conn.execute(
            "SELECT user_id, position, item_id, is_positive FROM candidates ORDER BY 1, 2"
        ).fetchall()
        assert shown == [
            ("u1", 0, "iu1", 1),
            ("u1", 1, "i0", 0),
            ("u2", 0, "iu2", 1),
            ("u2", 1, "i0", 0),
        ]
    finally:
        conn.close()


def test_check_migrations_rejects_bad_histories() -> None:
    def noop(conn: Any) -> None:
        return None

    migrations.check_migrations([migrations.Migration(1, "a", noop)])
    with pytest.raises(ValueError, match=r"1\.\.n"):
        migrations.check_migrations([migrations.Migration(2, "a", noop)])
    with pytest.raises(ValueError, match="unique"):
        migrations.check_migrations(
            [migrations.Migration(1, "a", noop), migrations.Migration(2, "a", noop)]
        )


def test_sqlite_newer_schema_asks_to_upgrade(db: Path) -> None:
    SQLiteTraceStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', '2030-01-01')")
    conn.commit()
    conn.close()
    for read_only in (False, True):
        with pytest.raises(TraceError, match="version 99") as info:
            SQLiteTraceStore(db, read_only=read_only)
        assert "upgrade recnet" in str(info.value)


def test_sqlite_rejects_files_that_are_not_traces(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.sqlite"
    text_file.write_text("not a database, just some words " * 20)
    before = text_file.read_bytes()
    for read_only in (False, True):
        with pytest.raises(TraceError, match="not a recnet trace"):
            SQLiteTraceStore(text_file, read_only=read_only)
    assert text_file.read_bytes() == before

    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    for read_only in (False, True):
        with pytest.raises(TraceError, match=r"not a recnet trace.*users"):
            SQLiteTraceStore(other, read_only=read_only)

    with pytest.raises(TraceError, match="is a folder"):
        SQLiteTraceStore(tmp_path)


def test_sqlite_read_only_needs_an_existing_trace(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(TraceError, match="does not exist"):
        SQLiteTraceStore(missing, read_only=True)
    assert not missing.exists()


def test_sqlite_concurrent_reader_sees_committed_rows(db: Path) -> None:
    writer = SQLiteTraceStore(db)
    writer.create_run(run_row())
    writer.add("messages", [message(0), message(0)])
    writer.commit_step("r1", 0)
    writer.add("messages", [message(1)])  # buffered, not committed

    reader = sqlite3.connect(db)
    ro_store = SQLiteTraceStore(db, read_only=True)
    try:
        assert reader.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
        assert ro_store.count("messages", "r1") == 2
        with pytest.raises(TraceError, match="read-only"):
            ro_store.add("messages", [message(0)])
        # A reader inside an open transaction does not block the writer (WAL) and keeps its
        # snapshot until it ends the transaction.
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
        writer.commit_step("r1", 1)
        assert reader.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM messages").fetchone()[0] == 3
        assert ro_store.runs()[0]["last_completed_step"] == 1
        # Another process with plain sqlite3 reads it too while the writer stays open.
        code = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "print(c.execute('SELECT count(*), max(step) FROM messages').fetchone())"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "(3, 1)"
    finally:
        reader.close()
        ro_store.close()
        writer.close()


def test_sqlite_rows_survive_reopening(db: Path) -> None:
    with SQLiteTraceStore(db) as store:
        store.create_run(run_row())
        store.add("messages", [message(0)])
        store.commit_step("r1", 0)
        store.add("messages", [message(1)])  # flushed by close, past the last completed step
    with SQLiteTraceStore(db, batch_size=10) as store:
        [run] = store.runs()
        assert run["last_completed_step"] == 0
        assert store.count("messages", "r1") == 2
        store.truncate_after("r1", run["last_completed_step"])
        assert [m["step"] for m in store.read("messages", "r1")] == [0]


def test_sqlite_path_with_spaces_read_only(tmp_path: Path) -> None:
    db = tmp_path / "my runs" / "a trace.sqlite"
    with SQLiteTraceStore(db) as store:
        store.create_run(run_row())
    with SQLiteTraceStore(db, read_only=True) as store:
        assert [r["run_id"] for r in store.runs()] == ["r1"]


def test_numpy_scalars_are_stored_as_numbers(store: TraceStore) -> None:
    row = {**interaction(5, 0), "seq": np.int64(5), "step": np.int32(2)}
    store.add("interactions", [{**row, "correct": np.bool_(True), "timestamp": np.int64(9)}])
    store.add("messages", [{**message(2), "score": np.float32(0.25)}])
    store.flush()
    [stored] = store.read("interactions", "r1", step=2)
    assert (stored["seq"], stored["timestamp"], bool(stored["correct"])) == (5, 9, True)
    assert float(store.read("messages", "r1")[0]["score"]) == 0.25


def test_sqlite_snapshot_gives_one_consistent_view(db: Path) -> None:
    with SQLiteTraceStore(db) as writer:
        writer.create_run(run_row())
        writer.add("messages", [message(0)])
        writer.commit_step("r1", 0)
        reader = SQLiteTraceStore(db, read_only=True)
        with reader.snapshot():
            assert reader.count("messages", "r1") == 1
            writer.add("messages", [message(1)])
            writer.commit_step("r1", 1)
            assert reader.count("messages", "r1") == 1
            assert reader.runs()[0]["last_completed_step"] == 0
        assert reader.count("messages", "r1") == 2
        reader.close()


def test_sqlite_bad_value_is_a_trace_error(db: Path) -> None:
    with SQLiteTraceStore(db) as store:
        store.create_run(run_row())
        store.add("interactions", [{**interaction(0, 0), "correct": "maybe"}])
        with pytest.raises(TraceError, match="rejected a value"):
            store.flush()


def test_only_the_newest_checkpoint_is_kept(store: TraceStore) -> None:
    for step in (0, 1, 2):
        store.add(
            "checkpoints",
            [{"run_id": "r1", "step": step, "created_at": "t", "format": "f", "state": b"x"}],
        )
        store.commit_step("r1", step)
    assert [row["step"] for row in store.read("checkpoints", "r1")] == [2]
    store.truncate_after("r1", 1)
    assert store.read("checkpoints", "r1") == []


def test_a_new_checkpoint_reuses_the_pages_of_the_one_it_replaces(tmp_path: Path) -> None:
    # a 300k-agent checkpoint is ~1 GB: a file must not hold the old and the new one at once
    size = 1 << 20
    blob = np.random.default_rng(0).bytes(size)  # incompressible, like a pickled world
    path = tmp_path / "trace.sqlite"
    with SQLiteTraceStore(path) as store:
        store.create_run(run_row())
        for step in range(4):
            store.add(
                "checkpoint_parts",
                [{"run_id": "r1", "step": step, "part": 1, "data": blob}],
            )
            row = {"run_id": "r1", "step": step, "created_at": "t", "format": "f", "state": blob}
            store.add("checkpoints", [row])
            store.commit_step("r1", step)
    db = sqlite3.connect(path)
    pages, page_size = (
        db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "page_size")
    )
    parts = db.execute("SELECT step, part FROM checkpoint_parts").fetchall()
    db.close()
    assert parts == [(3, 1)]
    assert pages * page_size < 3 * size  # one checkpoint (state + one part), not two


# -- tuple rows and value checks (every store) ------------------------------------------------


def test_tuple_rows_in_insert_order_round_trip(store: TraceStore) -> None:
    from recnet.trace.store import SPECS

    columns = SPECS["messages"].insert_columns
    assert columns == (
        "run_id",
        "step",
        "router_id",
        "client_id",
        "score",
        "status",
        "rule_id",
        "decided_step",
    )
    as_tuple = tuple({**message(0, "u:1"), "rule_id": "r", "decided_step": 1}[c] for c in columns)
    store.add("messages", [as_tuple, message(1, "i:2")])  # tuples and dicts mix
    store.flush()
    rows = store.read("messages", "r1")
    assert [(r["id"], r["client_id"], r["rule_id"], r["decided_step"]) for r in rows] == [
        (1, "u:1", "r", 1),
        (2, "i:2", None, None),
    ]


def test_bad_tuple_rows_are_clear_errors(store: TraceStore) -> None:
    good = ("r1", 0, "r:0", "u:1", 0.5, "accepted", None, 1)
    with pytest.raises(TraceError, match=r"7 values, not 8") as info:
        store.add("messages", [good, good[:7]])
    assert "run_id, step, router_id" in (info.value.remedy or "")
    with pytest.raises(TraceError, match=r"NOT NULL.*'status'"):
        store.add("messages", [good, (*good[:5], None, None, 1)])
    with pytest.raises(TraceError, match="single tuple"):
        store.add("messages", good)  # type: ignore[arg-type]
    with pytest.raises(TraceError, match="dict or a tuple"):
        store.add("messages", [["r1", 0]])  # type: ignore[list-item]
    with pytest.raises(TraceError, match=r"assigns 'id' itself"):
        store.add("messages", [{**message(0), "id": 7}])
    store.flush()
    assert store.count("messages") == 0


@pytest.mark.parametrize(
    ("table", "row", "column"),
    [
        ("interactions", {**interaction(0, 0), "correct": "maybe"}, "correct"),
        ("interactions", {**interaction(0, 0), "correct": 2}, "correct"),
        ("interactions", {**interaction(0, 0), "seq": 1.5}, "seq"),
        ("interactions", {**interaction(0, 0), "timestamp": "noon"}, "timestamp"),
        ("messages", {**message(0), "score": "high"}, "score"),
        ("messages", {**message(0), "client_id": 3}, "client_id"),
        ("messages", {**message(0), "rule_id": ["a"]}, "rule_id"),
        ("messages", {**message(0), "score": True}, "score"),
    ],
)
def test_a_bad_value_is_a_trace_error_naming_its_column(
    make_store: MakeStore, table: str, row: dict, column: str
) -> None:
    store = make_store()
    store.create_run(run_row())
    store.add("steps", [step_row(0)])
    store.add(table, [row])
    with pytest.raises(TraceError, match=rf"rejected a value: column '{column}' of .*'{table}'"):
        store.commit_step("r1", 0)
        store.wait()
    # Nothing of the step was written, and the bad row does not linger.
    assert store.count(table) == 0
    assert store.count("steps") == 0
    assert store.runs()[0]["last_completed_step"] == -1
    store.commit_step("r1", 0)
    assert store.count(table) == 0


def test_values_of_every_kind_are_accepted(store: TraceStore) -> None:
    store.add(
        "interactions",
        [
            {**interaction(0, 0), "correct": np.bool_(False), "seq": np.uint32(0)},
            {**interaction(1, 0), "correct": 1, "timestamp": None},
        ],
    )
    store.add("messages", [{**message(0), "score": 1}, {**message(0), "score": np.float64(0.5)}])
    store.add(
        "checkpoints",
        [{"run_id": "r1", "step": 0, "created_at": "t", "format": "f", "state": b"\x00\x01"}],
    )
    store.commit_step("r1", 0)
    assert [bool(r["correct"]) for r in store.read("interactions", "r1")] == [False, True]
    assert sorted(float(r["score"]) for r in store.read("messages", "r1")) == [0.5, 1.0]
    assert store.read("checkpoints", "r1")[0]["state"] == b"\x00\x01"

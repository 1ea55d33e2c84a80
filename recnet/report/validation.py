"""The backward phase's validation gate as the report shows it: kept and rolled-back batches.

Pipeline position: read by ``recnet.report.data.read_run`` from the trace's ``optimizations``
table (one row per edit, ``reason`` since trace schema version 8); rendered in the report's
routers section by ``recnet.report.page``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

#: Batches listed: every rolled-back one first (newest first), then the newest kept ones.
SHOWN = 30


@dataclass
class Validation:
    n_kept: int  # optimisations kept
    n_rolled_back: int
    batches: list[tuple[int, int, int, str, str, str]]  # step, batch, edits, modules, status, why


def read_validation(db: sqlite3.Connection, rid: str) -> Validation | None:
    """Counts and the most telling batches; None when the run made no optimisation."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(optimizations)")}
    if not columns:
        return None
    why = "max(reason)" if "reason" in columns else "''"
    rows = db.execute(
        f"SELECT step, batch, count(*), group_concat(DISTINCT module), status, {why} "
        "FROM optimizations WHERE run_id=? GROUP BY batch, step, status "
        "ORDER BY status = 'kept', batch DESC",
        (rid,),
    ).fetchall()
    if not rows:
        return None
    n_kept = sum(r[2] for r in rows if r[4] == "kept")
    n_rolled = sum(r[2] for r in rows if r[4] != "kept")
    batches = [
        (int(s), int(b), int(n), str(m), str(status), str(reason or ""))
        for s, b, n, m, status, reason in rows[:SHOWN]
    ]
    return Validation(n_kept, n_rolled, batches)

"""Issue 12's structure: one path per concept, the World owns routers, small modules.

The retired-router test runs the pinned synthetic backward scenario of the behaviour reference
(``tests/reference``), which splits and merges routers."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path

from test_reference_trace import pinned

from recnet.runner import simulate

PACKAGE = Path(__file__).resolve().parents[1] / "recnet"


def sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_in_recnet_is_over_500_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): t.count("\n") for p, t in sources().items()}
    assert {p: n for p, n in long.items() if n > 500} == {}


def test_no_branch_on_the_brain_kind_and_no_method_replaced_on_a_live_object() -> None:
    for path, text in sources().items():
        assert not re.search(r"brain\.kind\s*==", text), path
        assert "method-assign" not in text, path


def test_routers_merged_away_or_split_have_a_retired_step(tmp_path: Path) -> None:
    result = asyncio.run(simulate(pinned("synthetic_backward", tmp_path / "run.sqlite")))
    db = sqlite3.connect(result.trace_path)
    removed: dict[str, int] = {}
    for step, ids in db.execute(
        "SELECT step, router_ids_json FROM router_operations "
        "WHERE status = 'kept' AND operation IN ('split', 'merge')"
    ):
        removed.update(dict.fromkeys(json.loads(ids), step))
    retired = dict(
        db.execute("SELECT router_id, retired_step FROM routers WHERE retired_step IS NOT NULL")
    )
    alive = {r for (r,) in db.execute("SELECT router_id FROM routers WHERE retired_step IS NULL")}
    db.close()
    assert removed, "the pinned scenario no longer splits or merges: pick one that does"
    assert retired == removed
    assert not alive & set(removed)

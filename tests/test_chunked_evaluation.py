"""The final test ranks users a chunk at a time and hands ``predictions`` rows to the trace store a
chunk at a time (``recnet.phases.evaluate``), which bounds its memory at a million agents: with
chunks smaller than the test set the run, its metrics and its rows are those of one chunk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

import recnet.phases.evaluate as evaluate
from recnet.brain.base import RankOutcome, RankTask
from recnet.brain.offline import OfflineBrain
from tests.test_trace_levels import rows, run

PREDICTIONS = (
    "SELECT step, split, model, user_id, true_item, ranking_json, scores_json, rank "
    "FROM predictions ORDER BY id"
)


def test_small_chunks_rank_and_record_exactly_what_one_chunk_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "whole").mkdir()
    (tmp_path / "chunked").mkdir()
    whole, db_whole, _ = run(tmp_path / "whole", "none", "propagation.trend_share=0.8")
    monkeypatch.setattr(evaluate, "RANK_USERS_AT_ONCE", 7)
    monkeypatch.setattr(evaluate, "PREDICTION_ROWS_HELD", 5)
    calls: list[int] = []
    rank = OfflineBrain.rank

    async def counted(self: OfflineBrain, tasks: Sequence[RankTask]) -> list[RankOutcome]:
        calls.append(len(tasks))
        return await rank(self, tasks)

    monkeypatch.setattr(OfflineBrain, "rank", counted)
    chunked, db_chunked, _ = run(tmp_path / "chunked", "none", "propagation.trend_share=0.8")
    assert chunked.metrics == whole.metrics
    recorded = rows(db_chunked, PREDICTIONS)
    assert recorded == rows(db_whole, PREDICTIONS)
    test_users = len({r[3] for r in recorded if r[1] == "test" and r[2] == "recnet"})
    # the final test went to the brain in chunks of at most 7 users, all of them ranked
    final = calls[-((test_users + 6) // 7) :]
    assert test_users > 7 and max(final) <= 7 and sum(final) == test_users

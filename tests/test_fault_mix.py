"""Runs against a server answering 8 % 429 (with Retry-After) and 4 % 500 complete, 10 of 10
(issue 11, item 8). ``experiments/fault_mix.py`` in its smoke mode: the real ``openai`` client,
a different fault seed per run, short waits; the full-size figures are in the closing note."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import fault_mix


def test_ten_runs_complete_against_a_flaky_server(tmp_path: Path) -> None:
    rows = fault_mix.main(["--smoke", "--runs", "10", "--users", "8", "--out", str(tmp_path)])
    assert [row["completed"] for row in rows] == [True] * 10, [r.get("error") for r in rows]
    rate_limits = sum(row["faults"].get("rate_limit", 0) for row in rows)
    server_errors = sum(row["faults"].get("server_error", 0) for row in rows)
    requests = sum(row["requests"] for row in rows)
    assert rate_limits > 0 and server_errors > 0
    # Every fault cost one retry and nothing else: each run's answers are all the model's.
    assert sum(row["retries"] for row in rows) == rate_limits + server_errors
    assert sum(row["calls"] for row in rows) == requests - rate_limits - server_errors
    assert all(row["fallbacks"] == 0 for row in rows)
    assert (tmp_path / "runs.json").is_file()

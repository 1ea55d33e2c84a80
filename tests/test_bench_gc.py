"""experiments/bench_gc.py: both collector settings run, are counted, and give the same metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_small_world_counts_the_collectors_passes_for_both_settings(tmp_path: Path) -> None:
    out = tmp_path / "gc.json"
    script = str(ROOT / "experiments" / "bench_gc.py")
    done = subprocess.run(
        [sys.executable, script, "--agents", "300", "--one-at-a-time", "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "metrics identical" in done.stdout
    rows = json.loads(out.read_text())
    relaxed, default = rows["relaxed (default)"], rows["Python's default (700)"]
    for row in (relaxed, default):
        assert row["wall_s"] > 0 and row["peak_rss_mb"] > 50
        assert len(row["passes_by_generation"]) == 3
    # the relaxed threshold lets a step's garbage die before the young generation is collected
    assert relaxed["passes_by_generation"][0] < default["passes_by_generation"][0]

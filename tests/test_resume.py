"""Resume: a run stopped or killed at any point continues from its newest checkpoint and ends with
the same trace as an uninterrupted run (apart from run ids, timestamps and row ids)."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recnet import checkpoint
from recnet.config.loader import validate_scenario
from recnet.config.scenario import Scenario
from recnet.errors import TraceError
from recnet.runner import resume, simulate

SMALL = {
    "name": "resume",
    "seed": 3,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 30, "n_items": 60, "interactions_per_user": 8, "n_drifts": 1},
    },
    "world": {"n_routers": 4},
    "propagation": {"update_size": 10},
    "evaluation": {"n_negatives": 9},
    "trace": {"checkpoint_every": 1, "profile_every": 1},
}

VOLATILE = {"run_id", "started_at", "finished_at", "created_at", "id", "state", "note"}


def scenario(**trace: object) -> Scenario:
    raw = {**SMALL, "trace": {**SMALL["trace"], **trace}}
    return validate_scenario(raw)


def comparable(path: Path) -> dict[str, list[tuple]]:
    """Every table's rows without volatile columns, in a canonical order."""
    db = sqlite3.connect(path)
    tables = [
        r[0]
        for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        if r[0] not in {"schema_migrations", "checkpoints", "checkpoint_parts", "runs"}
    ]
    out: dict[str, list[tuple]] = {}
    for table in tables:
        cursor = db.execute(f"SELECT * FROM {table}")
        keep = [i for i, d in enumerate(cursor.description) if d[0] not in VOLATILE]
        out[table] = sorted(
            (tuple(row[i] for i in keep) for row in cursor), key=lambda r: tuple(map(str, r))
        )
    db.close()
    return out


def run_status(path: Path) -> tuple[str, int]:
    db = sqlite3.connect(path)
    row = db.execute("SELECT status, last_completed_step FROM runs").fetchone()
    db.close()
    return (row[0], row[1]) if row else ("", -2)


def stop_at(path: Path, stop_step: int, run: Scenario | None = None) -> None:
    """Run ``run`` (the small scenario by default) until step ``stop_step`` is done, then stop
    it as Ctrl-C would."""

    def stop(step: int, total: int) -> None:
        if step == stop_step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(simulate(run or scenario(), trace_path=path, on_step=stop))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    path = tmp_path_factory.mktemp("reference") / "trace.sqlite"
    asyncio.run(simulate(scenario(), trace_path=path))
    return comparable(path)


def test_stopped_run_resumes_to_the_same_trace(tmp_path: Path, reference: dict) -> None:
    path = tmp_path / "trace.sqlite"
    stop_at(path, 5)
    assert run_status(path) == ("stopped", 5)
    result = asyncio.run(resume(path))
    assert run_status(path)[0] == "finished"
    assert comparable(path) == reference
    values = {v for row in reference["metrics"] for v in row if isinstance(v, float)}
    assert result.metrics["recnet"]["ndcg@10"] in values


def test_routers_written_on_a_cadence_resume_to_the_same_trace(tmp_path: Path) -> None:
    # a checkpoint between two router writes carries which routers still wait to be written
    cadenced = scenario(router_every=4)
    whole = tmp_path / "whole.sqlite"
    asyncio.run(simulate(cadenced, trace_path=whole))
    path = tmp_path / "trace.sqlite"
    stop_at(path, 5, cadenced)  # steps 3 and 7 write routers: step 5 stops between them
    db = sqlite3.connect(path)
    state, fmt = db.execute("SELECT state, format FROM checkpoints").fetchone()
    db.close()
    waiting = checkpoint.load(state, fmt).parts["forward"].dirty_routers
    assert waiting and all(version > 1 for version in waiting.values())
    asyncio.run(resume(path))
    assert run_status(path)[0] == "finished"
    resumed, expected = comparable(path), comparable(whole)
    assert resumed == expected
    assert {r[1] for r in expected["router_versions"] if r[-2] == "integrate"} == {3, 7, 11, 15, 17}


def test_checkpoint_in_parts_resumes_to_the_same_trace(
    tmp_path: Path, reference: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a 300k-agent world pickles to ~1 GB, SQLite's limit for one value: parts of 4 KB here
    monkeypatch.setattr(checkpoint, "PART_BYTES", 4096)
    path = tmp_path / "trace.sqlite"
    stop_at(path, 5)
    db = sqlite3.connect(path)
    (step, fmt, state), *older = db.execute(
        "SELECT step, format, state FROM checkpoints"
    ).fetchall()
    parts = db.execute("SELECT step, part, length(data) FROM checkpoint_parts").fetchall()
    db.close()
    assert older == [] and step == 5 and len(state) == 4096
    assert fmt == f"{checkpoint.FORMAT};parts={len(parts) + 1}" and len(parts) > 3
    assert {s for s, _, _ in parts} == {5}  # the previous checkpoints' parts are gone
    assert sorted(p for _, p, _ in parts) == list(range(1, len(parts) + 1))
    asyncio.run(resume(path))
    assert run_status(path)[0] == "finished"
    assert comparable(path) == reference


def test_checkpoint_missing_a_part_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "PART_BYTES", 4096)
    path = tmp_path / "trace.sqlite"
    stop_at(path, 2)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM checkpoint_parts WHERE part = 2")
    db.commit()
    db.close()
    with pytest.raises(TraceError, match="parts"):
        asyncio.run(resume(path))


def test_checkpoint_is_stored_compressed(tmp_path: Path) -> None:
    path = tmp_path / "trace.sqlite"
    stop_at(path, 3)
    db = sqlite3.connect(path)
    state, fmt = db.execute("SELECT state, format FROM checkpoints").fetchone()
    db.close()
    assert fmt == checkpoint.FORMAT == "pickle/2+zstd"
    plain = pickle.dumps(checkpoint.load(state, fmt), protocol=pickle.HIGHEST_PROTOCOL)
    assert len(state) < 0.8 * len(plain)


def test_an_uncompressed_checkpoint_of_an_earlier_version_resumes(
    tmp_path: Path, reference: dict
) -> None:
    # traces written before compression hold plain pickles (format "pickle/2")
    path = tmp_path / "trace.sqlite"
    stop_at(path, 5)
    db = sqlite3.connect(path)
    state, fmt = db.execute("SELECT state, format FROM checkpoints").fetchone()
    plain = pickle.dumps(checkpoint.load(state, fmt), protocol=pickle.HIGHEST_PROTOCOL)
    db.execute("UPDATE checkpoints SET state = ?, format = ?", (plain, checkpoint.PLAIN_FORMAT))
    db.commit()
    db.close()
    asyncio.run(resume(path))
    assert run_status(path)[0] == "finished"
    assert comparable(path) == reference


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "trace.sqlite"
    stop_at(path, 2)
    db = sqlite3.connect(path)
    state = bytearray(db.execute("SELECT state FROM checkpoints").fetchone()[0])
    state[len(state) // 2 :] = bytes(len(state) - len(state) // 2)  # second half zeroed
    db.execute("UPDATE checkpoints SET state = ?", (bytes(state),))
    db.commit()
    db.close()
    with pytest.raises(TraceError, match="damaged"):
        asyncio.run(resume(path))


def test_sparse_checkpoints_repeat_steps_without_duplicating_rows(
    tmp_path: Path, reference: dict
) -> None:
    path = tmp_path / "trace.sqlite"

    sparse = scenario(checkpoint_every=3)  # checkpoints after steps 2 and 5: step 6-7 run again
    stop_at(path, 7, sparse)
    asyncio.run(resume(path))
    assert comparable(path) == reference


def test_kill_9_then_resume(tmp_path: Path, reference: dict) -> None:
    path = tmp_path / "trace.sqlite"
    yaml_path = tmp_path / "small.yaml"
    yaml_path.write_text(scenario().model_dump_json())  # JSON is valid YAML
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recnet.cli.app",
            "simulate",
            str(yaml_path),
            "--trace",
            str(path),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    if run_status(path)[1] >= 4:
                        break
                except sqlite3.Error:
                    pass
            if child.poll() is not None:
                break
            time.sleep(0.02)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    status, _ = run_status(path)
    if status != "finished":  # killed mid-run (the usual case): resume it
        asyncio.run(resume(path))
    assert run_status(path)[0] == "finished"
    assert comparable(path) == reference


def test_finished_runs_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no trace file"):
        asyncio.run(resume(tmp_path / "missing.sqlite"))
    path = tmp_path / "done.sqlite"
    asyncio.run(simulate(scenario(), trace_path=path))
    with pytest.raises(TraceError, match="already finished"):
        asyncio.run(resume(path))


def test_resume_with_the_backward_phase_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    raw = {**SMALL, "backward": {"enabled": True, "every": 2}}
    config = validate_scenario(raw)
    whole = tmp_path / "whole.sqlite"
    asyncio.run(simulate(config, trace_path=whole))

    def stop_at_step_4(step: int, total: int) -> None:
        if step == 4:
            raise KeyboardInterrupt

    cut = tmp_path / "cut.sqlite"
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(simulate(config, trace_path=cut, on_step=stop_at_step_4))
    asyncio.run(resume(cut))
    reference = comparable(whole)
    assert reference.get("gradients"), "the backward phase left no gradients to compare"
    assert comparable(cut) == reference


def test_resume_with_router_trends_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """The trends' slow averages live in the world, so a checkpoint carries them: a resumed run
    ranks with the same trends (prequential ranks, final metrics, backward feedback)."""
    raw = {
        **SMALL,
        "propagation": {**SMALL["propagation"], "trend_share": 0.8},
        "backward": {"enabled": True, "every": 2},
    }
    config = validate_scenario(raw)
    whole = tmp_path / "whole.sqlite"
    asyncio.run(simulate(config, trace_path=whole))
    plain = tmp_path / "plain.sqlite"
    asyncio.run(simulate(validate_scenario(SMALL), trace_path=plain))
    cut = tmp_path / "cut.sqlite"
    stop_at(cut, 4, config)
    asyncio.run(resume(cut))
    reference = comparable(whole)
    assert reference["prequential"] != comparable(plain)["prequential"]  # the trends did rank
    assert comparable(cut) == reference

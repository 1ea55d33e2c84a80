"""Profile trace levels (``trace.profiles``): a sampled level writes every version of a seeded
share of clients and nothing of the others, changes nothing else in the run, is stated in the run
row, and ``recnet traces agent`` says why an agent has no versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recnet.cli.app import app
from recnet.runner import RunResult
from recnet.trace.levels import AUTO_FULL_CLIENTS, MessageTrace, ProfileTrace, resolve_profiles
from tests.test_trace_levels import BASE, rows
from tests.test_trace_levels import run as run_at_message_level

VERSIONS = (
    "SELECT agent_id, step, kind, text, attributes_json, reason FROM profile_versions ORDER BY id"
)
CLIENTS = "SELECT agent_id FROM agents WHERE kind != 'router' ORDER BY rowid"


def run(tmp_path: Path, level: str, *extra: str) -> tuple[RunResult, sqlite3.Connection, Path]:
    folder = tmp_path / level
    folder.mkdir()
    return run_at_message_level(folder, "all", f"trace.profiles={level}", *extra)


def test_sampled_profiles_are_every_version_of_the_sampled_clients(tmp_path: Path) -> None:
    changed, db_changed, _ = run(tmp_path, "changed")
    sampled, db_sampled, _ = run(tmp_path, "sampled", "trace.profile_share=0.3")
    none, db_none, _ = run(tmp_path, "none")
    # the run itself is the same at every level
    assert changed.metrics == sampled.metrics == none.metrics
    steps = "SELECT step, n_messages, n_accepted, n_rejected, n_dropped FROM steps ORDER BY step"
    assert rows(db_changed, steps) == rows(db_sampled, steps) == rows(db_none, steps)
    # the level in force is stated in the run row
    stated = "SELECT trace_profiles FROM runs"
    assert rows(db_changed, stated) == [("changed",)]
    assert rows(db_sampled, stated) == [("sampled 0.3",)]
    assert rows(db_none, stated) == [("none",)]
    # sampled: the clients the seeded hash keeps, each with every version the full level wrote
    clients = [r[0] for r in rows(db_changed, CLIENTS)]
    kept = ProfileTrace("sampled", 0.3, seed=BASE["seed"])
    chosen = {a for position, a in enumerate(clients) if kept.keep(position)}
    assert 0.15 * len(clients) < len(chosen) < 0.45 * len(clients)
    every = rows(db_changed, VERSIONS)
    some = rows(db_sampled, VERSIONS)
    assert {r[0] for r in every} == set(clients)
    assert some == [r for r in every if r[0] in chosen]
    assert {r[0] for r in some if r[5] == "init"} == chosen
    assert any(r[1] >= 0 for r in some)  # later versions too, not only the initial ones
    assert rows(db_none, "SELECT count(*) FROM profile_versions") == [(0,)]


def test_traces_agent_says_an_unsampled_agent_was_left_out(tmp_path: Path) -> None:
    _, db, path = run(tmp_path, "sampled", "trace.profile_share=0.2")
    clients = [r[0] for r in rows(db, CLIENTS)]
    written = {r[0] for r in rows(db, "SELECT DISTINCT agent_id FROM profile_versions")}
    left_out = next(a for a in clients if a not in written)
    cli = CliRunner(env={"COLUMNS": "200"})
    shown = cli.invoke(app, ["traces", "agent", str(path), left_out])
    assert shown.exit_code == 0, shown.output
    assert "Profile versions: none" in shown.output
    assert "trace.profiles=sampled 0.2" in shown.output
    kept = cli.invoke(app, ["traces", "agent", str(path), sorted(written)[0]])
    assert kept.exit_code == 0, kept.output
    assert "trace.profiles" in kept.output  # the table's caption names the sample too
    assert "Profile versions: none" not in kept.output


def test_auto_records_every_client_in_small_worlds_and_a_sample_in_big_ones() -> None:
    assert resolve_profiles("auto", AUTO_FULL_CLIENTS) == "changed"
    assert resolve_profiles("auto", AUTO_FULL_CLIENTS + 1) == "sampled"
    assert resolve_profiles("none", 10**7) == "none"
    with pytest.raises(ValueError, match=r"trace\.profiles"):
        resolve_profiles("some", 10)
    big = ProfileTrace.for_world("auto", 0.01, 3, AUTO_FULL_CLIENTS + 1)
    assert big.describe() == "sampled 0.01"
    assert ProfileTrace.for_world("auto", 0.01, 3, 10).describe() == "changed"


def test_profile_sample_is_seeded_close_to_its_share_and_not_the_message_sample() -> None:
    first, again = ProfileTrace("sampled", 0.02, seed=4), ProfileTrace("sampled", 0.02, seed=4)
    other = ProfileTrace("sampled", 0.02, seed=5)
    positions = range(200_000)
    kept = [p for p in positions if first.keep(p)]
    assert kept == [p for p in positions if again.keep(p)]
    assert kept != [p for p in positions if other.keep(p)]
    assert abs(len(kept) / 200_000 - 0.02) < 0.002
    messages = MessageTrace("sampled", 0.02, seed=4)
    assert kept != [p for p in positions if messages.keep(p)]
    assert all(ProfileTrace("changed").keep(p) for p in range(100))
    assert not any(ProfileTrace("none").keep(p) for p in range(100))

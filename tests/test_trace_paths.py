"""A trace path recnet cannot use is refused in one line, and nothing says "the trace so far is
in …" about a trace that was never written (issue 11, item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from recnet.cli.app import app

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "scenarios" / "synthetic.yaml"
SMALL = [
    "--set",
    "dataset.synthetic.n_users=40",
    "--set",
    "dataset.synthetic.n_items=80",
    "--set",
    "dataset.synthetic.interactions_per_user=10",
]


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "trace so far" not in lines[0]
    return lines[0]


def test_a_file_used_as_a_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# not a folder\n")
    line = one_error_line(invoke("simulate", SYNTHETIC, *SMALL, "--trace", "README.md/t.sqlite"))
    assert line.startswith(
        "error: cannot write the trace README.md/t.sqlite: README.md is a file, not a folder"
    )
    assert (tmp_path / "README.md").read_text() == "# not a folder\n"


def test_a_file_that_is_not_a_trace_is_refused_and_left_alone(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n" * 100)
    line = one_error_line(invoke("simulate", SYNTHETIC, *SMALL, "--trace", notes))
    assert str(notes) in line
    assert notes.read_text() == "my notes, not a database\n" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no lock, log or journal


def test_a_folder_as_the_trace_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    line = one_error_line(invoke("simulate", SYNTHETIC, *SMALL, "--trace", "runs"))
    assert "runs is a folder" in line

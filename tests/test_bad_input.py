"""Bad input: every user error is one `error:` line on stderr, exit code 1, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from recnet.cli.app import app

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "scenarios" / "synthetic.yaml"
MOVIELENS = REPO / "scenarios" / "movielens.yaml"
GROUPLENS = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def the_error(result: Result) -> str:
    """The single error line of a user error; fails on anything else."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # handled, not a crash
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "error:" not in result.stdout
    return lines[0]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path with an empty cache and no data folder (nothing found by accident)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECNET_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("RECNET_CACHE_DIR", str(cache))
    return cache


def latest_folder(folder: Path, ratings: list[tuple[int, int, float, int]]) -> Path:
    """A tiny folder in the ml-latest-small layout."""
    folder.mkdir(parents=True)
    rows = "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ratings)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + rows)
    movies = "".join(f"{i},Movie {i} (2000),Drama|Comedy\n" for i in range(1, 10))
    (folder / "movies.csv").write_text("movieId,title,genres\n" + movies)
    return folder


def scenario_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


# -- scenario errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["simulate", "validate"])
def test_unknown_override_key_names_the_key_path(command: str) -> None:
    line = the_error(invoke(command, SYNTHETIC, "--set", "propagation.tauu=0.5"))
    assert "propagation.tauu" in line and "unknown key" in line
    assert "recnet options" in line


def test_unknown_key_in_the_file_names_the_key_path(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "world:\n  n_router: 3\n")
    line = the_error(invoke("validate", path))
    assert "world.n_router" in line and "unknown key" in line
    assert "did you mean 'n_routers'?" in line


def test_unknown_key_suggests_the_closest_key_of_its_own_section(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "dataset:\n  synthetic:\n    n_user: 20\n  kindd: x\n")
    line = the_error(invoke("validate", path))
    assert "dataset.synthetic.n_user: unknown key — did you mean 'n_users'?" in line
    assert "dataset.kindd: unknown key — did you mean 'kind'?" in line
    line = the_error(invoke("validate", SYNTHETIC, "--set", "seeed=3"))
    assert "seeed: unknown key — did you mean 'seed'?" in line
    line = the_error(invoke("validate", SYNTHETIC, "--set", "propagation.zzz=1"))
    assert "propagation.zzz: unknown key — remove it" in line  # nothing close: no guess


def test_wrong_type_names_path_and_expected_type() -> None:
    line = the_error(invoke("validate", SYNTHETIC, "--set", "world.n_routers=many"))
    assert "world.n_routers" in line and "integer" in line and "'many'" in line
    line = the_error(invoke("simulate", SYNTHETIC, "--set", "propagation.tau=high"))
    assert "propagation.tau" in line and "number" in line


def test_a_value_that_fits_no_form_of_a_union_is_one_problem_naming_every_form() -> None:
    # executor.blas_threads is an integer >= 1, "auto" or null: pydantic reports one error per form
    line = the_error(invoke("validate", SYNTHETIC, "--set", "executor.blas_threads=many"))
    assert "1 invalid setting: executor.blas_threads: " in line
    assert "valid integer" in line and "'auto'" in line and "(got 'many')" in line
    assert "constrained-int" not in line and "literal[" not in line
    line = the_error(invoke("validate", SYNTHETIC, "--set", "executor.blas_threads=0"))
    assert "executor.blas_threads: Input should be greater than or equal to 1, or " in line
    # two list entries out of range are still two problems, each with its own path
    line = the_error(invoke("validate", SYNTHETIC, "--set", "evaluation.ks=[0, 0]"))
    assert "2 invalid settings" in line and "evaluation.ks.0" in line and "evaluation.ks.1" in line


def test_out_of_range_value_names_the_bound() -> None:
    line = the_error(invoke("validate", SYNTHETIC, "--set", "propagation.tau=3"))
    assert "propagation.tau" in line and "1" in line


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("propagation.tau", "has no '='"),
        ("=3", "empty key"),
        ("seed.value=3", "'seed' is a value, not a section"),
        ("evaluation.ks=[1, 5", "not valid YAML"),
    ],
)
def test_bad_override_syntax(override: str, needle: str) -> None:
    line = the_error(invoke("validate", SYNTHETIC, "--set", override))
    assert needle in line and "override" in line


def test_missing_scenario_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    line = the_error(invoke("simulate", missing))
    assert str(missing) in line and "not found" in line


def test_invalid_yaml_is_still_one_line(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "world:\n  n_routers: [1, 2\nseed: 3\n")
    line = the_error(invoke("validate", path))
    assert "not valid YAML" in line and str(path) in line


# -- dataset errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "simulate"])
def test_missing_dataset_with_download_disabled(
    command: str, tmp_path: Path, _isolated: Path
) -> None:
    data = tmp_path / "data"
    result = invoke(
        command,
        MOVIELENS,
        "--set",
        "dataset.path=null",
        "--set",
        "dataset.download=false",
        "--set",
        f"dataset.data_dir={data}",
    )
    line = the_error(result)
    assert "ml-latest-small not found" in line and "downloading is disabled" in line
    assert str(data / "ml-latest-small.zip") in line and str(_isolated) in line
    assert GROUPLENS in line and "dataset.path" in line  # where to get it and how to pass it
    assert not _isolated.exists()  # nothing downloaded or created


def test_missing_explicit_dataset_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.zip"
    for command in ("validate", "simulate"):
        line = the_error(invoke(command, MOVIELENS, "--set", f"dataset.path={missing}"))
        assert str(missing) in line and "does not exist" in line


def test_corrupt_zip(tmp_path: Path) -> None:
    bad = tmp_path / "ml-latest-small.zip"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip archive " * 20)
    line = the_error(invoke("simulate", MOVIELENS, "--set", f"dataset.path={bad}"))
    assert str(bad) in line and "not a readable zip" in line


def test_empty_dataset_after_min_rating(tmp_path: Path) -> None:
    folder = latest_folder(
        tmp_path / "ml", [(u, i, 3.0, 100 * u + i) for u in (1, 2) for i in range(1, 6)]
    )
    line = the_error(
        invoke(
            "simulate",
            MOVIELENS,
            "--set",
            f"dataset.path={folder}",
            "--set",
            "dataset.min_rating=4.5",
        )
    )
    assert "no interactions left" in line and "dataset.min_rating" in line


def test_user_with_a_single_interaction_recbole(tmp_path: Path) -> None:
    folder = tmp_path / "mini"
    folder.mkdir()
    rows = [("alice", f"i{k}", k) for k in range(5)] + [("bob", "i1", 9)]
    (folder / "mini.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows)
    )
    args = ("--set", "dataset.kind=recbole", "--set", f"dataset.path={folder}")
    assert invoke("validate", SYNTHETIC, *args).exit_code == 0  # the folder is found
    line = the_error(invoke("simulate", SYNTHETIC, *args))
    assert "bob" in line and "fewer than 3 interactions" in line
    assert "dataset.short_users=drop" in line


def test_user_with_a_single_interaction_movielens_folder(tmp_path: Path) -> None:
    ratings = [(1, i, 4.0, i) for i in range(1, 6)] + [(2, 3, 5.0, 50)]
    folder = latest_folder(tmp_path / "ml", ratings)
    line = the_error(invoke("simulate", MOVIELENS, "--set", f"dataset.path={folder}"))
    assert "fewer than 3 interactions" in line and "(e.g. 2)" in line


def test_recbole_folder_without_inter_files(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    line = the_error(
        invoke(
            "validate",
            SYNTHETIC,
            "--set",
            "dataset.kind=recbole",
            "--set",
            f"dataset.path={folder}",
        )
    )
    assert "empty.inter" in line and str(folder) in line


def test_recbole_without_path() -> None:
    line = the_error(invoke("validate", SYNTHETIC, "--set", "dataset.kind=recbole"))
    assert "dataset.path" in line


def test_too_few_items_for_the_negatives() -> None:
    small = ["n_users=20", "n_items=40", "interactions_per_user=30"]
    sets = [arg for s in small for arg in ("--set", f"dataset.synthetic.{s}")]
    line = the_error(invoke("simulate", SYNTHETIC, *sets))
    assert "evaluation.n_negatives" in line


# -- trace errors ---------------------------------------------------------------------------------


def test_traces_on_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    line = the_error(invoke("traces", "runs", missing))
    assert str(missing) in line and "does not exist" in line


def test_traces_unknown_run(tmp_path: Path) -> None:
    trace = tmp_path / "t.sqlite"
    small = ["n_users=20", "n_items=80", "interactions_per_user=10"]
    sets = [arg for s in small for arg in ("--set", f"dataset.synthetic.{s}")]
    assert invoke("simulate", SYNTHETIC, *sets, "-q", "--trace", trace).exit_code == 0
    line = the_error(invoke("traces", "metrics", trace, "--run", "no-such-run"))
    assert "no-such-run" in line


# -- the real entry point -------------------------------------------------------------------------


def test_entry_point_user_error_and_usage_error(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "recnet.cli.app"]
    missing = subprocess.run(
        [*command, "validate", str(tmp_path / "nope.yaml")], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"error: scenario file not found: {tmp_path / 'nope.yaml'} — pass the path of a YAML "
        "file, e.g. scenarios/synthetic.yaml"
    ]
    usage = subprocess.run([*command, "simulate", "--no-such-flag"], capture_output=True, text=True)
    assert usage.returncode == 2
    assert "No such option" in usage.stderr and "Traceback" not in usage.stderr

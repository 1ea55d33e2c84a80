"""The `recnet` command line end to end: simulate, validate, options, traces, help, interrupts."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from rich.text import Text
from typer.testing import CliRunner

import recnet.runner
from recnet import __version__
from recnet.cli.app import WIDE_TABLE, app
from recnet.cli.display import metric_label, metrics_table
from recnet.config.loader import load_scenario
from recnet.config.scenario import PropagationSettings
from recnet.errors import BudgetExceeded

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "scenarios" / "synthetic.yaml"
MOVIELENS = REPO / "scenarios" / "movielens.yaml"
SMALL = [
    "--set",
    "dataset.synthetic.n_users=40",
    "--set",
    "dataset.synthetic.n_items=80",
    "--set",
    "dataset.synthetic.interactions_per_user=10",
]
TRACE_TABLES = (
    "runs",
    "steps",
    "agents",
    "profile_versions",
    "routers",
    "router_versions",
    "messages",
    "filter_rule_versions",
    "predictions",
    "metrics",
    "candidates",
    "interactions",
)
STEP_LINE = re.compile(r"\b\d+/\d+ steps\b")


def invoke(*args: str | Path, columns: int | None = None) -> Result:
    env = {"COLUMNS": str(columns)} if columns else None
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default trace folders (`runs/`) land in a temporary folder, never in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    trace = tmp_path_factory.mktemp("synthetic") / "run.sqlite"
    return invoke("simulate", SYNTHETIC, *SMALL, "--trace", trace), trace


def table_rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TRACE_TABLES}


def db_metrics(path: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT model, metric, value FROM metrics WHERE split = 'test'")
        for model, metric, value in rows:
            out.setdefault(model, {})[metric] = value
    return out


def printed_rows(output: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header labels and each model's cells from the metrics table in ``output``."""
    lines = output.splitlines()
    header = next(line for line in lines if "NDCG@" in line and "model" in line)
    labels = [c.strip() for c in re.split(r"[┃│]", header) if c.strip()][1:]
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) == len(labels) + 1 and re.fullmatch(r"[\d.–]+", cells[1]):
            rows[cells[0]] = cells[1:]
    return labels, rows


# -- simulate -------------------------------------------------------------------------------------


def test_simulate_synthetic_writes_every_trace_table(synthetic_run: tuple[Result, Path]) -> None:
    result, trace = synthetic_run
    assert result.exit_code == 0, result.output
    counts = table_rows(trace)
    empty = [table for table, n in counts.items() if n == 0]
    assert not empty, f"trace tables without rows: {empty}"
    assert counts["runs"] == 1
    with sqlite3.connect(trace) as db:
        assert db.execute("SELECT status FROM runs").fetchone()[0] == "finished"


def test_simulate_prints_the_metrics_of_the_trace(synthetic_run: tuple[Result, Path]) -> None:
    result, trace = synthetic_run
    labels, rows = printed_rows(result.stdout)
    assert list(rows)[:2] == ["recnet", "popularity"]  # RecNet first, then the baselines
    expected = db_metrics(trace)
    assert set(rows) == set(expected)
    for model, cells in rows.items():
        want = {metric_label(name): f"{value:.4f}" for name, value in expected[model].items()}
        assert dict(zip(labels, cells, strict=True)) == want
    assert "MRR" in labels and "NDCG@10" in labels and "HR@5" in labels


def test_simulate_prints_dataset_progress_and_trace_hint(
    synthetic_run: tuple[Result, Path],
) -> None:
    result, trace = synthetic_run
    out = result.stdout
    scenario = load_scenario(SYNTHETIC, SMALL[1::2])
    n_users = scenario.dataset.synthetic.n_users
    assert re.search(rf"dataset \S+: {n_users} users, 80 items, [\d,]+ train interactions", out)
    # not a terminal: the progress bar is printed once, at the end, not redrawn per step
    assert len([line for line in out.splitlines() if STEP_LINE.search(line)]) == 1
    assert f"trace: {trace}" in out
    assert f"recnet traces metrics {trace}" in out
    assert result.stderr == ""


def test_simulate_quiet_prints_results_only(tmp_path: Path) -> None:
    trace = tmp_path / "quiet.sqlite"
    result = invoke("simulate", SYNTHETIC, *SMALL, "--trace", trace, "--quiet")
    assert result.exit_code == 0, result.output
    assert not STEP_LINE.search(result.stdout)
    assert "dataset synthetic:" not in result.stdout
    assert "recnet" in printed_rows(result.stdout)[1]
    assert trace.is_file()


def test_simulate_default_trace_goes_to_trace_dir(tmp_path: Path) -> None:
    folder = tmp_path / "my-runs"
    result = invoke("simulate", SYNTHETIC, *SMALL, "-q", "--set", f"trace.dir={folder}")
    assert result.exit_code == 0, result.output
    files = list(folder.glob("synthetic-s7-*.sqlite"))
    assert len(files) == 1
    assert f"trace: {files[0]}" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_simulate_movielens_subsample(tmp_path: Path, ml_small_zip: Path) -> None:
    trace = tmp_path / "ml.sqlite"
    result = invoke(
        "simulate",
        MOVIELENS,
        "--set",
        f"dataset.path={ml_small_zip}",
        "--set",
        "dataset.max_users=40",
        "--set",
        "dataset.max_interactions_per_user=15",
        "--set",
        "propagation.update_size=100",
        "--trace",
        trace,
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"dataset ml-latest-small: 40 users, 9,742 items", result.stdout)
    _, rows = printed_rows(result.stdout)
    assert list(rows) == ["recnet", "popularity", "random"]
    counts = table_rows(trace)
    assert counts["steps"] >= 2 and counts["predictions"] > 0 and counts["messages"] > 0
    with sqlite3.connect(trace) as db:
        source = db.execute("SELECT dataset_source FROM runs").fetchone()[0]
    assert Path(source).resolve() == ml_small_zip.resolve()


# -- interrupts and errors during a run -----------------------------------------------------------


@pytest.fixture
def stop_at_step(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    """Make the real runner raise the exception put in the list once step 2 is committed."""
    real = recnet.runner.simulate
    raise_this: list[BaseException] = []

    async def stopping(scenario, *, on_step=None, **kwargs):  # type: ignore[no-untyped-def]
        def step(done: int, total: int) -> None:
            if on_step is not None:
                on_step(done, total)
            if done == 2:
                raise raise_this[0]

        return await real(scenario, on_step=step, **kwargs)

    monkeypatch.setattr(recnet.runner, "simulate", stopping)
    yield raise_this


def test_ctrl_c_exits_130_and_names_the_trace(
    tmp_path: Path, stop_at_step: list[BaseException]
) -> None:
    stop_at_step.append(KeyboardInterrupt())
    trace = tmp_path / "stopped.sqlite"
    result = invoke("simulate", SYNTHETIC, *SMALL, "--trace", trace)
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines() == [
        f"interrupted at step 2 (commit); resume with `recnet simulate --resume {trace}`"
    ]
    with sqlite3.connect(trace) as db:
        steps = db.execute("SELECT count(*) FROM steps").fetchone()[0]
        status, note = db.execute("SELECT status, note FROM runs").fetchone()
    assert steps == 3  # steps 0, 1 and 2 were committed before the interrupt
    assert status == "stopped" and note.startswith("interrupted at step 2")


def test_library_error_mid_run_is_one_line_with_the_resume_command(
    tmp_path: Path, stop_at_step: list[BaseException]
) -> None:
    stop_at_step.append(
        BudgetExceeded(
            "call budget of 10 reached",
            "raise llm.budget.max_calls",
            setting="max_calls",
            limit=10,
        )
    )
    trace = tmp_path / "budget.sqlite"
    result = invoke("simulate", SYNTHETIC, *SMALL, "--trace", trace)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    # The runner replaces a budget error's remedy with the command that raises the cap and goes on.
    assert result.stderr.strip().splitlines() == [
        f"error: call budget of 10 reached — state saved in {trace}; resume with "
        f"`recnet simulate --resume {trace} --set llm.budget.max_calls=20`"
    ]


def test_ctrl_c_before_the_run_started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(recnet.runner, "simulate", interrupted)
    result = invoke("simulate", SYNTHETIC, "--trace", tmp_path / "never.sqlite")
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted before the run started; no trace was written"


def test_error_before_the_run_does_not_point_at_an_older_trace(
    synthetic_run: tuple[Result, Path],
) -> None:
    _, trace = synthetic_run  # an existing trace file, reused with --trace
    result = invoke(
        "simulate", SYNTHETIC, "--set", "dataset.synthetic.n_items=40", "--trace", trace
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert table_rows(trace)["runs"] == 1  # the failed start added no run


def test_a_bug_outside_the_run_is_one_line_and_a_log_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in recnet")

    monkeypatch.setattr(recnet.runner, "simulate", broken)
    result = invoke("simulate", SYNTHETIC, "--trace", tmp_path / "x.sqlite")
    assert result.exit_code == 1
    log = tmp_path / "x.log"
    assert result.stderr.strip().splitlines() == [
        "error: unexpected RuntimeError: a bug in recnet — this is a bug in recnet; "
        f"traceback in {log}"
    ]
    assert "Traceback (most recent call last)" not in result.output
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text


# -- validate, options, traces --------------------------------------------------------------------


def test_validate_ok() -> None:
    result = invoke("validate", SYNTHETIC, "--set", "seed=11")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: synthetic (seed 11, dataset synthetic, 200 users")
    assert not Path("runs").exists()  # validating writes nothing


@pytest.mark.parametrize("columns", [80, 200])  # list layout and table layout
def test_options_lists_every_key_with_its_default(columns: int) -> None:
    result = invoke("options", columns=columns)
    assert result.exit_code == 0, result.output
    default = str(PropagationSettings.model_fields["tau"].default)
    lines = [
        line
        for line in result.stdout.splitlines()
        if re.match(r"[\s│]*propagation\.tau\b", line)  # the key's own row, not a mention
    ]
    assert len(lines) == 1 and default in lines[0]
    for key in ("dataset.synthetic.n_users", "llm.retry.max_attempts", "trace.profile_every"):
        assert key in result.stdout
    assert ("┃ key" in result.stdout) == (columns >= WIDE_TABLE)


def test_options_markdown() -> None:
    result = invoke("options", "--format", "markdown")
    assert result.exit_code == 0, result.output
    default = PropagationSettings.model_fields["tau"].default
    assert f"| `propagation.tau` | float (>= -1.0, <= 1.0) | `{default}` |" in result.stdout
    assert "### `propagation`" in result.stdout


def test_traces_commands_on_a_simulated_trace(synthetic_run: tuple[Result, Path]) -> None:
    _, trace = synthetic_run
    with sqlite3.connect(trace) as db:
        run_id = db.execute("SELECT run_id FROM runs").fetchone()[0]
        user = db.execute("SELECT agent_id FROM agents WHERE kind = 'user' LIMIT 1").fetchone()[0]
        step = db.execute("SELECT min(step) FROM messages").fetchone()[0]
        n_messages = db.execute("SELECT count(*) FROM messages WHERE step = ?", (step,)).fetchone()
    runs = invoke("traces", "runs", trace, columns=200)
    assert runs.exit_code == 0 and run_id in runs.stdout and "finished" in runs.stdout
    metrics = invoke("traces", "metrics", trace)
    assert metrics.exit_code == 0 and "recnet" in metrics.stdout and "popularity" in metrics.stdout
    agent = invoke("traces", "agent", trace, user)
    assert agent.exit_code == 0, agent.output
    assert f"Agent {user}" in agent.stdout and "Interactions" in agent.stdout
    messages = invoke("traces", "messages", trace, str(step))
    assert messages.exit_code == 0, messages.output
    assert f"{n_messages[0]} message(s)" in messages.stdout


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ([], "simulate"),
        (["simulate"], "--set"),
        (["validate"], "without running it"),
        (["options"], "--format"),
        (["traces"], "Inspect a trace database"),
        (["traces", "runs"], "List the runs"),
        (["traces", "agent"], "AGENT_ID"),
        (["traces", "messages"], "STEP"),
        (["traces", "metrics"], "NDCG"),
        (["traces", "llm"], "LLM calls"),
    ],
)
def test_help(command: list[str], expected: str) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: recnet" in result.stdout
    assert expected in result.stdout


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"recnet {__version__}"


def test_no_arguments_shows_help() -> None:
    result = invoke()
    assert "Usage: recnet" in result.output
    assert "simulate" in result.output and "validate" in result.output


# -- display helpers ------------------------------------------------------------------------------


def test_metrics_table_order_labels_and_bold_best() -> None:
    metrics = {
        "popularity": {"mrr": 0.5, "ndcg@5": 0.6, "hr@5": 0.9},
        "random": {"mrr": 0.2, "ndcg@5": 0.6, "hr@5": 0.3},
        "recnet": {"mrr": 0.7, "ndcg@5": 0.4, "hr@5": 0.8},
    }
    table = metrics_table(metrics)
    headers = [str(c.header) for c in table.columns]
    assert headers == ["model", "NDCG@5", "HR@5", "MRR"]
    models = [str(cell) for cell in table.columns[0].cells]
    assert models == ["recnet", "popularity", "random"]
    cells = {str(c.header): list(c.cells) for c in table.columns[1:]}
    bold = {h: [isinstance(x, Text) and x.style == "bold" for x in col] for h, col in cells.items()}
    assert bold == {
        "NDCG@5": [False, True, True],  # a tie: both best values are bold
        "HR@5": [False, True, False],
        "MRR": [True, False, False],
    }


def test_a_reader_that_leaves_early_is_not_reported_as_a_bug() -> None:
    """`recnet simulate --help | head` closes the pipe while recnet still writes: the command
    ends quietly with the shell's code for SIGPIPE, not with a 'this is a bug' line."""
    import typer as typer_module

    from recnet.cli.failures import EXIT_BROKEN_PIPE, RecnetGroup

    probe = typer_module.Typer(cls=RecnetGroup)

    @probe.command()
    def write() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    @probe.command()
    def other() -> None:
        """A second command, so that `write` is a sub-command as in recnet."""

    result = CliRunner().invoke(probe, ["write"])
    assert result.exit_code == EXIT_BROKEN_PIPE
    assert "bug" not in result.output

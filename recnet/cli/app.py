"""The ``recnet`` command line: simulate, validate, options, traces, report.

Pipeline position: the outermost layer. It reads a scenario (``recnet.config.loader``), hands it
to the composition root (``recnet.runner``) and shows progress and results
(``recnet.cli.display``). Library errors (``RecnetError``: scenario, dataset, trace, backend,
budget) become one ``error: ...`` line on stderr and exit code 1; usage errors exit 2 as click
does; Ctrl-C during a run exits 130 and prints the resume command. An unexpected error during a
run is one ``error:`` line too (step, phase, trace, resume command); its traceback goes to a log
file beside the trace and into the trace, not to the terminal.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console

from recnet import __version__
from recnet.cli import options_doc
from recnet.cli.display import StepProgress, show_result
from recnet.cli.failures import EXIT_ERROR, RecnetGroup, report_error, unexpected_error
from recnet.cli.report import report_command
from recnet.cli.traces import traces_app
from recnet.config.loader import load_scenario
from recnet.config.scenario import DatasetSettings, Scenario
from recnet.errors import DatasetError, RecnetError, ScenarioError

if TYPE_CHECKING:
    from recnet.runner import Prepared, RunResult

EXIT_INTERRUPTED = 130
WIDE_TABLE = 140  # below this many columns `recnet options` prints a list, not a table

StepCallback = Callable[[int, int], None]
PreparedCallback = Callable[["Prepared"], None]
RunStarter = Callable[[StepCallback, PreparedCallback], Coroutine[Any, Any, "RunResult"]]


app = typer.Typer(
    name="recnet",
    cls=RecnetGroup,
    help="Simulate preference propagation in agentic recommender systems (after RecNet, "
    "arXiv 2601.21609). Offline by default: no network, no API key.",
    epilog="Start with: recnet simulate scenarios/synthetic.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(traces_app, name="traces")

ScenarioArg = Annotated[
    Path,
    typer.Argument(
        metavar="SCENARIO",
        help="Scenario YAML file, e.g. scenarios/synthetic.yaml. Every key: `recnet options`.",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY.PATH=VALUE",
        help="Override one scenario option; the value is read as YAML (0.8, true, [1, 5]). "
        "Repeat for several, e.g. --set propagation.tau=0.4 --set seed=3.",
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"recnet {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


# -- simulate -------------------------------------------------------------------------------------


def trace_path_for(scenario: Scenario, explicit: Path | None, run_id: str) -> Path:
    """Where the run writes its trace: ``--trace``, else ``trace.path``, else ``trace.dir``."""
    from recnet.runner import default_trace_path

    return explicit or default_trace_path(scenario, run_id)


def run_with_progress(
    console: Console, start: RunStarter, trace_path: Path, *, quiet: bool
) -> RunResult:
    """Run ``start(on_step, on_prepared)`` under a progress bar; Ctrl-C exits 130.

    ``start`` builds the run's coroutine from the two callbacks, so other ways of running
    (resuming a trace, a dry run) can reuse the same display and error handling. Every way a
    run can end badly is one ``error:`` line (the runner puts where the trace is and how to
    resume into the error's remedy); an unexpected error outside the run (a bug) is one line
    too, its traceback written to a log file.
    """
    started = False

    def on_prepared(prepared: Prepared) -> None:
        nonlocal started
        started = True  # the runner opens the trace right after this callback
        progress.on_prepared(prepared)

    try:
        with StepProgress(console, enabled=not quiet) as progress:
            return asyncio.run(start(progress.on_step, on_prepared))
    except KeyboardInterrupt:
        from recnet.supervisor import last_run_hint

        hint = last_run_hint(trace_path) if started else None
        if hint is not None:
            click.echo(hint, err=True)  # "interrupted at step N (phase); resume with `...`"
        else:
            click.echo("interrupted before the run started; no trace was written", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except RecnetError as exc:
        report_error(exc)
        raise typer.Exit(EXIT_ERROR) from None
    except Exception as exc:  # a bug outside the supervised run (e.g. while loading data)
        from recnet.supervisor import log_path

        folder = trace_path.parent if trace_path.parent.is_dir() else Path(tempfile.gettempdir())
        report_error(unexpected_error(exc, folder / log_path(trace_path).name))
        raise typer.Exit(EXIT_ERROR) from None


@app.command()
def simulate(
    scenario: Annotated[
        Path | None,
        typer.Argument(
            metavar="[SCENARIO]",
            help="Scenario YAML file, e.g. scenarios/synthetic.yaml (omit with --resume). "
            "Every key: `recnet options`.",
            show_default=False,
        ),
    ] = None,
    overrides: SetOpt = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace",
            metavar="PATH",
            help="Write the trace database here (default: trace.path, else "
            "<trace.dir>/<run id>.sqlite). An existing file gains one more run.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            metavar="RUN.sqlite",
            help="Continue a stopped, failed or killed run from its newest checkpoint. Its "
            "scenario is read from the trace; --set may change only how calls are made and "
            "paid for (llm.budget.*, llm.retry.*, llm.rate_limit.*, llm.max_concurrency, "
            "llm.base_url, llm.api_key_env) and what evaluation reports (evaluation.ks, "
            "evaluation.baselines), e.g. to raise the budget that stopped it.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Estimate LLM calls and tokens (and cost, with llm.budget.prices) without "
            "calling any LLM: the offline brain runs the scenario and every operation is "
            "priced with the prompt pack.",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No dataset line and no progress bar; results only."),
    ] = False,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="At the end, write the HTML report next to the trace (<trace>.html); "
            "see `recnet report --help`.",
        ),
    ] = False,
) -> None:
    """Run SCENARIO end to end: forward steps, evaluation, metrics for RecNet and baselines.

    Shows the dataset and a progress bar over forward steps, then
    NDCG@K, HR@K and MRR for RecNet and each baseline (same candidates),
    and where the trace database was written.

    Examples: recnet simulate scenarios/synthetic.yaml --set propagation.tau=0.4;
    recnet simulate --resume runs/<run>.sqlite; recnet simulate scenarios/movielens.yaml --dry-run
    """
    console = Console()
    if resume is not None:
        if scenario is not None:
            raise typer.BadParameter("--resume takes no SCENARIO", param_hint="--resume")
        from recnet.runner import resume as resume_run

        def start_resume(
            on_step: StepCallback, on_prepared: PreparedCallback
        ) -> Coroutine[Any, Any, RunResult]:
            return resume_run(resume, overrides=overrides, on_step=on_step, on_prepared=on_prepared)

        result = run_with_progress(console, start_resume, resume, quiet=quiet)
        show_result(console, result)
        if report:
            _write_report(console, result.trace_path)
        return
    if scenario is None:
        raise typer.BadParameter("give a SCENARIO file (or --resume RUN.sqlite)")
    loaded = load_scenario(scenario, overrides)
    if dry_run:
        _dry_run(console, loaded, quiet=quiet)
        return
    from recnet.runner import new_run_id
    from recnet.runner import simulate as run_scenario

    run_id = new_run_id(loaded)
    path = trace_path_for(loaded, trace, run_id)

    def start(
        on_step: StepCallback, on_prepared: PreparedCallback
    ) -> Coroutine[Any, Any, RunResult]:
        return run_scenario(
            loaded, trace_path=path, on_step=on_step, on_prepared=on_prepared, run_id=run_id
        )

    result = run_with_progress(console, start, path, quiet=quiet)
    show_result(console, result)
    if report:
        _write_report(console, result.trace_path)


def _write_report(console: Console, trace_path: Path) -> None:
    from recnet.report import write_report

    written = write_report([trace_path])
    console.print(f"report: {written}")


def _dry_run(console: Console, scenario: Scenario, *, quiet: bool) -> None:
    """Estimate the LLM cost of ``scenario`` (see ``recnet.dry_run``)."""
    from recnet.dry_run import dry_run_scenario, estimate, estimate_table

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dry-run.sqlite"
        offline = dry_run_scenario(scenario)

        def start(
            on_step: StepCallback, on_prepared: PreparedCallback
        ) -> Coroutine[Any, Any, RunResult]:
            from recnet.runner import simulate as run_scenario

            return run_scenario(offline, trace_path=path, on_step=on_step, on_prepared=on_prepared)

        result = run_with_progress(console, start, path, quiet=quiet)
    console.print(estimate_table(estimate(scenario, result)))


# -- validate -------------------------------------------------------------------------------------


def check_dataset(settings: DatasetSettings) -> str:
    """Check the dataset can be found (without downloading or loading it); describe it."""
    if settings.kind == "synthetic":
        s = settings.synthetic
        return f"synthetic, {s.n_users} users × {s.n_items} items, {s.n_communities} communities"
    if settings.kind == "recbole":
        return f"recbole at {_recbole_folder(settings)}"
    from recnet.data.download import resolve_movielens

    if not settings.download:
        return f"movielens {settings.variant} at {resolve_movielens(settings)}"
    try:
        found = resolve_movielens(settings.model_copy(update={"download": False}))
    except DatasetError:
        if settings.path is not None:
            raise
        return (
            f"movielens {settings.variant}, not on disk yet: `recnet simulate` downloads it "
            "from GroupLens"
        )
    return f"movielens {settings.variant} at {found}"


def _recbole_folder(settings: DatasetSettings) -> Path:
    if settings.path is None:
        raise DatasetError(
            "dataset.kind=recbole needs dataset.path",
            "set dataset.path to the folder holding <name>.inter (and .item, .random)",
        )
    folder = Path(settings.path).expanduser()
    if not folder.is_dir():
        raise DatasetError(
            f"RecBole folder {folder} does not exist or is not a folder",
            "point dataset.path at the folder holding <name>.inter",
        )
    name = settings.name or folder.name
    names = [f"{name}.inter"] + [f"{name}.{split}.inter" for split in ("train", "valid", "test")]
    if not any((folder / n).is_file() for n in names):
        raise DatasetError(
            f"no {name}.inter or {name}.train/valid/test.inter in {folder}",
            "set dataset.name to the file stem of the .inter files",
        )
    return folder


@app.command()
def validate(scenario: ScenarioArg, overrides: SetOpt = None) -> None:
    """Check SCENARIO without running it: every option, and that the dataset can be found.

    Nothing is downloaded, loaded or called.
    Prints "ok: <name> (seed N, dataset ...)" and exits 0,
    or one "error: ..." line naming the key path or file and exits 1.
    """
    loaded = load_scenario(scenario, overrides)
    check_prices(loaded)
    where = check_dataset(loaded.dataset)
    typer.echo(f"ok: {loaded.name} (seed {loaded.seed}, dataset {where})")


def check_prices(scenario: Scenario) -> None:
    """A cost cap needs a price for the model (else the run would stop when the brain is built)."""
    budget, llm = scenario.llm.budget, scenario.llm
    if budget.max_cost is None or llm.backend == "offline":
        return
    from recnet.llm.budget import DEFAULT_PRICES, find_price

    if find_price(llm.model, {**DEFAULT_PRICES, **budget.prices}) is None:
        raise ScenarioError(
            f"llm.budget.max_cost is set but model {llm.model!r} has no price",
            f"add llm.budget.prices.{llm.model}: [<USD per 1M input>, <USD per 1M output>]",
        )


@app.command()
def check(
    scenario: ScenarioArg,
    overrides: SetOpt = None,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate/--no-estimate",
            help="Also estimate the whole run's calls, tokens and cost (runs the dry run).",
        ),
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Probe SCENARIO's LLM server before spending: reachable, model served, json_schema honoured
    or silently ignored (and what to set), one tiny request per operation with latency and
    tokens, and the whole run's estimated cost. Exits 1 when a probe failed."""
    import asyncio

    from recnet.check import check_table, run_check

    loaded = load_scenario(scenario, overrides)
    console = Console()

    def whole_run() -> object:
        from recnet.dry_run import dry_run_scenario
        from recnet.dry_run import estimate as estimate_of
        from recnet.runner import simulate as run_scenario

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "check.sqlite"
            offline = dry_run_scenario(loaded)

            def start(
                on_step: StepCallback, on_prepared: PreparedCallback
            ) -> Coroutine[Any, Any, RunResult]:
                return run_scenario(
                    offline, trace_path=path, on_step=on_step, on_prepared=on_prepared
                )

            result = run_with_progress(console, start, path, quiet=quiet)
        return estimate_of(loaded, result)

    figures = whole_run() if estimate else None
    report = asyncio.run(
        run_check(loaded, (lambda: figures) if figures is not None else None, name=scenario.name)
    )
    console.print(check_table(report))
    if not report.ok:
        raise typer.Exit(1)


# -- report -------------------------------------------------------------------------------------

app.command("report")(report_command)


# -- options --------------------------------------------------------------------------------------


class OutputFormat(StrEnum):
    table = "table"
    markdown = "markdown"


@app.command()
def options(
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            "-f",
            help="table for the terminal; markdown for the README (one table per section).",
        ),
    ] = OutputFormat.table,
) -> None:
    """List every scenario option: key path, type, default and description.

    Generated from the scenario models, so it is always complete.
    Set any option in the YAML file or with --set key.path=value.
    """
    sections = options_doc.option_sections()
    if output is OutputFormat.markdown:
        typer.echo(options_doc.markdown(sections), nl=False)
        return
    console = Console()
    wide = console.width >= WIDE_TABLE
    console.print(
        options_doc.rich_table(sections) if wide else options_doc.rich_list(sections),
        highlight=False,
    )


def main() -> None:
    """Console-script entry point (``recnet = "recnet.cli.app:main"``)."""
    app(prog_name="recnet")


if __name__ == "__main__":
    main()

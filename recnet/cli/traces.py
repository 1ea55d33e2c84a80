"""``recnet traces ...``: print reports on a trace database, even while its run is going.

Pipeline position: the reading end of the trace store, mounted by ``recnet.cli`` as the
``traces`` sub-command. Each command opens the file read-only, builds one table with
``recnet.trace.report`` and prints it. Library errors (missing file, unknown run or agent)
propagate as TraceError; the top-level CLI prints them as one line and exits 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType

from recnet.trace import report
from recnet.trace.sqlite_store import SQLiteTraceStore

traces_app = typer.Typer(
    help="Inspect a trace database (runs/<run>.sqlite): runs, agents, messages, metrics, LLM "
    "calls. Files are opened read-only, so a running simulation is never blocked.",
    no_args_is_help=True,
)

FileArg = Annotated[
    Path,
    typer.Argument(
        metavar="FILE", help="Trace database written by `recnet simulate` (a .sqlite file)."
    ),
]
RunOpt = Annotated[
    str | None,
    typer.Option("--run", help="Run id (see `recnet traces runs FILE`); default: the latest run."),
]


def _show(file: Path, build: Callable[[SQLiteTraceStore], RenderableType]) -> None:
    with SQLiteTraceStore(file, read_only=True) as store, store.snapshot():
        renderable = build(store)
    Console().print(renderable)


@traces_app.command("runs")
def runs(file: FileArg) -> None:
    """List the runs in FILE: id, name, seed, brain, status, last completed step, times."""
    _show(file, report.runs_table)


@traces_app.command("agent")
def agent(
    file: FileArg,
    agent_id: Annotated[
        str, typer.Argument(metavar="AGENT_ID", help="Agent id: u:<user>, i:<item> or r:<router>.")
    ],
    run: RunOpt = None,
    limit: Annotated[int, typer.Option(help="Rows shown per section.", min=1)] = 100,
) -> None:
    """Show one agent's history: profile and filter-rule versions, messages, interactions."""
    _show(file, lambda store: report.agent_history_table(store, run, agent_id, limit=limit))


@traces_app.command("messages")
def messages(
    file: FileArg,
    step: Annotated[
        int, typer.Argument(metavar="STEP", help="Step whose router messages to show.")
    ],
    run: RunOpt = None,
    limit: Annotated[
        int, typer.Option(help="Messages shown (the summary counts all).", min=0)
    ] = 50,
) -> None:
    """Show the router→client messages sent at STEP, with counts by status."""
    _show(file, lambda store: report.step_messages_table(store, run, step, limit=limit))


@traces_app.command("metrics")
def metrics(
    file: FileArg,
    run: RunOpt = None,
    step: Annotated[
        int | None, typer.Option(help="Evaluation step; default: the last one.")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split (test or valid); default: test if present.")
    ] = None,
) -> None:
    """Compare models on NDCG@K, HR@K and MRR at one step (best per column in bold)."""
    _show(file, lambda store: report.metrics_table(store, run, step=step, split=split))


@traces_app.command("llm")
def llm(
    file: FileArg,
    run: RunOpt = None,
    limit: Annotated[int, typer.Option(help="Calls shown, oldest first.", min=0)] = 50,
) -> None:
    """List LLM calls: operation, agent, model, tokens, latency, cache hit, attempts, error."""
    _show(file, lambda store: report.llm_calls_table(store, run, limit=limit))


@traces_app.command("cost")
def cost(file: FileArg, run: RunOpt = None) -> None:
    """LLM calls, prompt/output tokens and cost per operation, per step, per interaction."""
    from recnet.trace.cost_report import cost_table

    _show(file, lambda store: cost_table(store, run))


@traces_app.command("lineage")
def lineage(
    file: FileArg,
    target: Annotated[
        str,
        typer.Argument(
            metavar="RULE_ID|ROUTER_ID",
            help="A filter rule id (rule-min_relevance, ...) or a router id (r:<n>).",
        ),
    ],
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="For a rule: only the default memory and this agent's copy."),
    ] = None,
    run: RunOpt = None,
    limit: Annotated[int, typer.Option(help="Versions shown.", min=1)] = 200,
) -> None:
    """Show how a rule or router evolved: versions, parent versions, the gradient behind each."""
    _show(file, lambda store: report.lineage_table(store, run, target, agent=agent, limit=limit))

"""``recnet report``: the command that writes a run's HTML page (``recnet.report``).

Pipeline position: a CLI command registered on the root app by ``recnet.cli.app``; it only
parses options and calls ``recnet.report.write_report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_command(
    traces: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN.sqlite [OTHER.sqlite ...]",
            help="Trace database(s) written by recnet simulate; two or more are compared "
            "(curves overlaid).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="REPORT.html",
            help="Where to write the page (default: the first trace with .html).",
            show_default=False,
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            metavar="AGENT_ID",
            help="Add one agent's story: profile versions, messages and their fates, choices "
            "(e.g. u:1 for user 1, i:50 for item 50).",
            show_default=False,
        ),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            metavar="RUN_ID",
            help="Which run of a trace holding several (default: the newest).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML page about a run: open it in any browser, offline.

    Run facts and test metrics beside the baselines; metrics over time;
    propagation (message fates per step and filter rule, recipients per
    multicast, clients reached); routers (router–client graph, router count
    with splits and merges, lineage of the most changed routers and rules);
    LLM calls, tokens, cost, latency, retries, repairs and fallbacks.
    Works on a run still writing its trace, or one that stopped early.

    Examples: recnet report runs/x.sqlite --agent u:1 -o x.html;
    recnet report runs/a.sqlite runs/b.sqlite -o a-vs-b.html (compare)
    """
    from recnet.report import write_report

    written = write_report(traces, output, run_id=run, agent=agent)
    size = written.stat().st_size
    typer.echo(f"report: {written} ({size / 1e6:.1f} MB)")

"""``recnet report``: one self-contained HTML page about a run (or two runs overlaid).

Pipeline position: reads trace databases written by ``recnet simulate`` (read-only, so a run
still writing can be reported on) and writes an HTML file: run facts and test metrics beside the
baselines, metrics over time, propagation, routers, LLM calls and, on request, one agent's story.

Charts are drawn with matplotlib (a core dependency, so ``simulate --report`` always works) and
inlined as SVG; the page has no script and loads nothing from the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from recnet.errors import TraceError


def default_output(trace: Path) -> Path:
    """``runs/x.sqlite`` → ``runs/x.html``."""
    return trace.with_suffix(".html")


def render_report(
    traces: Sequence[Path | str], *, run_id: str | None = None, agent: str | None = None
) -> str:
    """The report page for ``traces`` (two or more = comparison mode) as an HTML string."""
    from recnet.report import data, page

    if not traces:
        raise TraceError("no trace given", "pass RUN.sqlite (or two to compare)")
    return page.render(data.read_runs(traces, run_id=run_id, agent=agent))


def write_report(
    traces: Sequence[Path | str],
    output: Path | str | None = None,
    *,
    run_id: str | None = None,
    agent: str | None = None,
) -> Path:
    """Render the report and write it to ``output`` (default: beside the first trace)."""
    html = render_report(traces, run_id=run_id, agent=agent)
    target = Path(output) if output is not None else default_output(Path(traces[0]))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html, encoding="utf-8")
    return target

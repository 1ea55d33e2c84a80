"""Cell helpers of the trace reports: short renderings of values, the run a report is about,
and plain-text rendering of rich tables.

Pipeline position: used by ``recnet.trace.report`` and ``recnet.trace.lineage``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from rich.console import Console, RenderableType

from recnet.errors import TraceError
from recnet.trace.store import Row, TraceStore


def render_text(renderable: RenderableType, width: int = 160) -> str:
    """Render a table (or any rich renderable) to plain text, as the terminal would show it."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(renderable)
    return buffer.getvalue()


def _few(values: Iterable[Any], n: int = 5) -> str:
    items = [str(v) for v in values]
    shown = ", ".join(items[:n])
    return f"{shown} (+{len(items) - n} more)" if len(items) > n else shown or "none"


def _short(text: Any, n: int = 100) -> str:
    if text is None:
        return ""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _time(value: Any) -> str:
    return "" if value is None else str(value)[:19].replace("T", " ")


def _num(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


def _opt(value: Any) -> str:
    return "" if value is None else str(value)


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def resolve_run(store: TraceStore, run_id: str | None) -> Row:
    """The run row for ``run_id``; the latest run (by start time) when ``run_id`` is None."""
    runs = store.runs()
    if not runs:
        raise TraceError(
            "this trace holds no runs yet", "start one with `recnet simulate`, then look again"
        )
    if run_id is None:
        return runs[-1]
    for run in runs:
        if run["run_id"] == run_id:
            return run
    raise TraceError(
        f"no run {run_id!r} in this trace",
        f"runs in this file: {_few(r['run_id'] for r in reversed(runs))} "
        "(`recnet traces runs FILE` lists them)",
    )

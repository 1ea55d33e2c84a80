"""How a run ends: finished, stopped or failed, said once in the trace and once to the user.

Pipeline position: wraps the phase loop inside the composition root (``recnet.runner``). Whatever
ends a run, ``supervised`` records the run's status and note, flushes and closes the trace,
closes the brain and releases the trace's writer lease. Its errors carry the resume command:

- a budget stop: the exact ``recnet simulate --resume … --set llm.budget.<cap>=…`` to go on;
- Ctrl-C (``KeyboardInterrupt``/``CancelledError``): note ``interrupted at step N (phase)``;
- a library error (``RecnetError``): its own message, plus where the trace is and how to resume;
- anything else (a bug): ``RunFailed`` naming the step and phase; the full traceback goes to
  ``runs.note`` and to a log file beside the trace (``runs/<run>.log``), not to the terminal.
"""

from __future__ import annotations

import asyncio
import shlex
import sqlite3
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from recnet.context import RunContext, utc_now
from recnet.errors import BudgetExceeded, RecnetError, RunFailed
from recnet.exec.collector import relaxed_collector
from recnet.exec.threads import BlasThreads

T = TypeVar("T")

MAX_NOTE_CHARS = 20_000


def log_path(trace_path: Path) -> Path:
    """The run log beside a trace: ``runs/x.sqlite`` → ``runs/x.log``."""
    return trace_path.with_suffix(".log")


def resume_command(trace_path: Path, *overrides: str) -> str:
    """``recnet simulate --resume <trace> [--set k=v …]``, quoted for a POSIX shell."""
    parts = ["recnet", "simulate", "--resume", str(trace_path)]
    for override in overrides:
        parts += ["--set", override]
    return " ".join(shlex.quote(part) for part in parts)


def where(ctx: RunContext) -> str:
    """``step 3 (interact)``, ``initialisation`` or ``evaluation (after step 9)``."""
    if ctx.phase == "initialise":
        return "initialisation"
    return f"step {ctx.step} ({ctx.phase})"


def can_resume(ctx: RunContext) -> bool:
    """Whether the trace holds a checkpoint of this run (written at the end of initialisation)."""
    return ctx.phase != "initialise"


def restart_or_resume(ctx: RunContext, trace_path: Path, *overrides: str) -> str:
    if can_resume(ctx):
        return f"resume with `{resume_command(trace_path, *overrides)}`"
    return "it stopped before its first checkpoint: start it again with `recnet simulate`"


def write_log(trace_path: Path, ctx: RunContext, text: str) -> Path:
    """Append ``text`` (a traceback) to the log beside the trace; return the log's path."""
    path = log_path(trace_path)
    with path.open("a", encoding="utf-8") as log:
        log.write(f"=== {utc_now()} run {ctx.run_id} failed at {where(ctx)}\n{text}\n")
    return path


async def supervised(ctx: RunContext, trace_path: Path, body: Callable[[], Awaitable[T]]) -> T:
    """Run ``body`` under the scenario's BLAS thread limit (``recnet.exec.threads``) and garbage
    collector threshold (``recnet.exec.collector``); record how the run ended (finished, stopped,
    failed) and close everything, releasing the trace's lease (``ctx.lease``)."""
    try:
        executor = ctx.scenario.executor
        with (
            BlasThreads(executor.blas_threads) as ctx.blas,
            relaxed_collector(executor.gc_threshold),
        ):
            result = await body()
        mark_finished(ctx)
        return result
    except BaseException as exc:
        replacement = mark_ended(ctx, trace_path, exc)
        if replacement is not exc:
            raise replacement from exc
        raise
    finally:
        await close_run(ctx)


def mark_finished(ctx: RunContext) -> None:
    ctx.store.update_run(ctx.run_id, status="finished", finished_at=ctx.clock())


def mark_ended(ctx: RunContext, trace_path: Path, exc: BaseException) -> BaseException:
    """Record a run that ``exc`` ended as ``stopped`` (Ctrl-C, cancel, budget) or ``failed``;
    return the exception to raise: ``exc`` itself (its remedy now holds the resume command) or,
    for a bug, a ``RunFailed`` to raise ``from exc``."""
    status, note, replacement = _ending(ctx, trace_path, exc)
    try:
        ctx.store.flush()
    finally:
        ctx.store.update_run(ctx.run_id, status=status, finished_at=utc_now(), note=note)
    return replacement if replacement is not None else exc


async def close_run(ctx: RunContext) -> None:
    """Close the trace and the brain, then give back the trace's writer lease."""
    try:
        ctx.store.close()
        await ctx.brain.aclose()
    finally:
        if ctx.lease is not None:
            ctx.lease.release()


def _ending(
    ctx: RunContext, trace_path: Path, exc: BaseException
) -> tuple[str, str, BaseException | None]:
    """(status, runs.note, the exception to raise instead or None) for a run ended by ``exc``."""
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        hint = restart_or_resume(ctx, trace_path)
        return "stopped", f"interrupted at {where(ctx)}; {hint}", None
    if isinstance(exc, BudgetExceeded):
        raised = exc.raised_limit()
        hint = restart_or_resume(ctx, trace_path, *([raised] if raised else []))
        exc.remedy = f"state saved in {trace_path}; {hint}"
        return "stopped", f"{exc.message}; {hint}", None
    if isinstance(exc, RecnetError):
        hint = restart_or_resume(ctx, trace_path)
        exc.remedy = "; ".join(
            part for part in (exc.remedy, f"the trace so far is in {trace_path}", hint) if part
        )
        return "failed", f"{type(exc).__name__} at {where(ctx)}: {exc}", None
    if not isinstance(exc, Exception):  # SystemExit, GeneratorExit: not ours to translate
        return "failed", repr(exc)[:2000], None
    text = "".join(traceback.format_exception(exc))
    summary = f"{type(exc).__name__}: {' '.join(str(exc).split()) or '(no message)'}"
    try:
        log = str(write_log(trace_path, ctx, text))
    except OSError as log_error:
        log = f"no log file ({log_error.strerror or log_error})"
    failed = RunFailed(
        f"run failed at {where(ctx)}: {summary}",
        f"this is a bug in recnet; traceback in {log} and in runs.note of {trace_path}; "
        + restart_or_resume(ctx, trace_path),
        step=ctx.step,
        phase=ctx.phase,
    )
    note = f"failed at {where(ctx)}: {summary}\n\n{text}"[:MAX_NOTE_CHARS]
    return "failed", note, failed


def last_run_hint(trace_path: Path) -> str | None:
    """The newest run's ``interrupted …; resume with …`` note (for the Ctrl-C line), or None.

    Reads the trace with plain ``sqlite3`` (read-only): the runner wrote the note on its way out.
    """
    if not trace_path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{quote(str(trace_path.resolve()))}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT note FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    note = row[0] if row else None
    return note if isinstance(note, str) and note.startswith("interrupted") else None

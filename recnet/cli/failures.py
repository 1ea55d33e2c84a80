"""How the CLI fails: one ``error:`` line for a library error, one line plus a log file for a bug.

Pipeline position: wraps every ``recnet`` sub-command (the root group's ``invoke``); the run
supervisor has its own path for failures inside a run, which ends in :func:`report_error` too.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

from recnet.errors import RecnetError

EXIT_ERROR = 1
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


def discard_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush after a closed pipe
    neither fails nor prints a second error (the recipe of Python's `signal` docs)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stdout (tests, notebooks)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)


def report_error(exc: BaseException) -> None:
    """Print ``error: <message — remedy>`` to stderr as one line, whatever whitespace it holds."""
    message = " ".join(str(exc).split())
    click.echo(f"{click.style('error:', fg='red', bold=True)} {message}", err=True)


class RecnetGroup(TyperGroup):
    """Root command group: turns library errors raised by any sub-command into one line, and a
    bug into one line whose traceback is in a log file."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RecnetError as exc:
            report_error(exc)
            raise typer.Exit(EXIT_ERROR) from None
        except BrokenPipeError:  # the reader went away (`recnet options | head`): not a bug
            discard_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except Exception as exc:  # a bug in any command: one line, the traceback in a log file
            if type(exc).__module__.split(".")[0] in ("click", "typer"):
                raise  # exits, aborts and usage errors (typer vendors click): as click shows them
            report_error(unexpected_error(exc, Path(tempfile.gettempdir()) / "recnet-error.log"))
            raise typer.Exit(EXIT_ERROR) from None


def unexpected_error(exc: Exception, log: Path) -> RecnetError:
    """One-line error for a bug; its traceback is appended to ``log``."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    try:
        with log.open("a", encoding="utf-8") as out:
            out.write(text + "\n")
        where = f"traceback in {log}"
    except OSError:
        where = "no log file could be written"
    summary = " ".join(str(exc).split()) or "(no message)"
    return RecnetError(
        f"unexpected {type(exc).__name__}: {summary}", f"this is a bug in recnet; {where}"
    )

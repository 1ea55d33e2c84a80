"""Library errors. Every error a user can cause carries a remedy; the CLI prints it as one line.

Sits beside every stage of the pipeline: loaders, scenario validation, backends and the trace
store raise these, and ``recnet.cli`` turns them into a clear message and a non-zero exit code.
"""

from __future__ import annotations


class RecnetError(Exception):
    """Base class for errors caused by input or environment, not by a bug in recnet."""

    def __init__(self, message: str, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        if self.remedy:
            return f"{self.message} — {self.remedy}"
        return self.message


class ScenarioError(RecnetError):
    """A scenario file or override is invalid; the message names the key path."""


class DatasetError(RecnetError):
    """A dataset is missing, corrupt, empty or unusable for the evaluation protocol."""


class BackendError(RecnetError):
    """An LLM or embedding backend failed in a way retries cannot fix."""


class BudgetExceeded(RecnetError):
    """A call, token or cost cap was reached; the run stops cleanly and can be resumed."""


class TraceError(RecnetError):
    """A trace database is missing, unreadable or of an unknown schema version."""

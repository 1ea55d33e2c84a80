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
    """A call, token or cost cap was reached; the run stops cleanly and can be resumed.

    ``setting`` names the cap (``max_calls``, ``max_tokens`` or ``max_cost`` under
    ``llm.budget``) and ``limit`` its value, so the resume hint can say what to raise.
    """

    def __init__(
        self,
        message: str,
        remedy: str | None = None,
        *,
        setting: str | None = None,
        limit: float | None = None,
    ) -> None:
        super().__init__(message, remedy)
        self.setting = setting
        self.limit = limit

    def raised_limit(self) -> str | None:
        """``llm.budget.<setting>=<twice the limit>``: an override that lets a resume go on."""
        if self.setting is None or self.limit is None:
            return None
        raised = self.limit * 2 if self.limit > 0 else 10
        value = f"{raised:g}" if isinstance(raised, float) else str(int(raised))
        return f"llm.budget.{self.setting}={value}"


class TraceError(RecnetError):
    """A trace database is missing, unreadable or of an unknown schema version."""


class TraceBusy(TraceError):
    """Another live process holds the trace's writer lease (one writer per trace)."""


class RunFailed(RecnetError):
    """An unexpected error (a bug, not bad input) ended a run.

    The message names the step and phase; the remedy says where the traceback was written and
    how to resume. The original exception is the ``__cause__``.
    """

    def __init__(self, message: str, remedy: str | None = None, *, step: int, phase: str) -> None:
        super().__init__(message, remedy)
        self.step = step
        self.phase = phase

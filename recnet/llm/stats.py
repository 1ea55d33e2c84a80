"""Counters of one run's LLM traffic, shared by every wrapper of a backend stack.

Pipeline position: owned by the composition root, passed to ``build_backend`` and to
``call_structured``; each layer counts what it sees (the budget wrapper counts network calls,
tokens and cost; the cache counts hits and answers replayed from another source; the retry wrapper
counts retries; structured calls count repairs and, per operation, answers and fallbacks). The CLI
prints ``table()`` and ``warnings()`` at the end of a run; ``flag()`` marks the run's metrics rows
when its answers are not all the model's own. A ``FallbackGuard`` attached with ``guard`` stops the
run when one operation falls back too often.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from recnet.llm.fallbacks import FallbackGuard


@dataclass
class LLMStats:
    """Running totals. ``calls`` are requests answered by the provider (cache hits excluded)."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0  # extra attempts after a retryable failure
    repairs: int = 0  # re-asks after an answer failed to parse or validate
    fallbacks: int = 0  # structured calls that gave up (the caller kept its previous state)
    format_fallbacks: int = 0  # switches from json_schema to JSON-in-text (structured_output=auto)
    foreign_replays: int = 0  # cache hits recorded from another source (llm.cache.replay_from)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0  # US dollars, from the budget price table (0 for unpriced models)
    # Per operation: structured calls finished, and how many of them fell back.
    answers_by_operation: dict[str, int] = field(default_factory=dict)
    fallbacks_by_operation: dict[str, int] = field(default_factory=dict)
    replayed_sources: dict[str, int] = field(default_factory=dict)  # source → foreign hits
    guard: FallbackGuard | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """Every counter (the per-operation ones as dicts); what a checkpoint saves."""
        out: dict[str, Any] = {}
        for item in fields(self):
            if item.name == "guard":
                continue
            value = getattr(self, item.name)
            out[item.name] = dict(value) if isinstance(value, dict) else value
        return out

    def note_outcome(self, operation: str, *, fell_back: bool, error: str | None = None) -> None:
        """Count one finished structured call; the guard may stop the run (``FallbackLimit``)."""
        self.answers_by_operation[operation] = self.answers_by_operation.get(operation, 0) + 1
        if fell_back:
            self.fallbacks += 1
            self.fallbacks_by_operation[operation] = (
                self.fallbacks_by_operation.get(operation, 0) + 1
            )
        if self.guard is not None:
            self.guard.observe(operation, fell_back=fell_back, error=error)

    def note_foreign_replay(self, source: str) -> None:
        """Count one answer replayed from a source other than the run's own."""
        self.foreign_replays += 1
        self.replayed_sources[source] = self.replayed_sources.get(source, 0) + 1

    def fallback_shares(self) -> dict[str, tuple[int, int]]:
        """operation → (fallbacks, answers), for operations with at least one fallback."""
        return {
            op: (n, self.answers_by_operation.get(op, n))
            for op, n in sorted(self.fallbacks_by_operation.items())
            if n
        }

    def warnings(self) -> list[str]:
        """One line per reason the run's answers are not all the model's own (empty: clean)."""
        lines = [
            f"{op}: {n:,} of {total:,} answers fell back to the reference policy ({n / total:.0%})"
            for op, (n, total) in self.fallback_shares().items()
        ]
        lines += [
            f"{n:,} answers replayed from another source: '{source}'"
            for source, n in sorted(self.replayed_sources.items())
        ]
        return lines

    def flag(self) -> str | None:
        """A compact mark for the metrics rows these answers produced, or None when clean."""
        parts = [f"{op} {n}/{total}" for op, (n, total) in self.fallback_shares().items()]
        flag = f"fallback: {', '.join(parts)}" if parts else ""
        if self.replayed_sources:
            replayed = ", ".join(f"{n} from {s}" for s, n in sorted(self.replayed_sources.items()))
            flag = f"{flag}; replayed: {replayed}" if flag else f"replayed: {replayed}"
        return flag or None

    def table(self, title: str = "LLM calls") -> Table:
        """A two-column rich table of the counters."""
        table = Table(title=title)
        table.add_column("counter")
        table.add_column("value", justify="right")
        for name, value in self.as_dict().items():
            if isinstance(value, dict):
                shown = ", ".join(f"{key} {n:,}" for key, n in sorted(value.items())) or "–"
            else:
                shown = f"${value:.4f}" if name == "cost" else f"{value:,}"
            table.add_row(name, shown)
        return table

"""Counters of one run's LLM traffic, shared by every wrapper of a backend stack.

Pipeline position: owned by the composition root, passed to ``build_backend`` and to
``call_structured``; each layer counts what it sees (the budget wrapper counts network calls,
tokens and cost; the cache counts hits; the retry wrapper counts retries; structured calls count
repairs and fallbacks). The CLI prints ``table()`` at the end of a run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rich.table import Table


@dataclass
class LLMStats:
    """Running totals. ``calls`` are requests answered by the provider (cache hits excluded)."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0  # extra attempts after a retryable failure
    repairs: int = 0  # re-asks after an answer failed to parse or validate
    fallbacks: int = 0  # structured calls that gave up (the caller kept its previous state)
    format_fallbacks: int = 0  # switches from json_schema to JSON-in-text (structured_output=auto)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0  # US dollars, from the budget price table (0 for unpriced models)

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)

    def table(self, title: str = "LLM calls") -> Table:
        """A two-column rich table of the counters."""
        table = Table(title=title)
        table.add_column("counter")
        table.add_column("value", justify="right")
        for name, value in self.as_dict().items():
            shown = f"${value:.4f}" if name == "cost" else f"{value:,}"
            table.add_row(name, shown)
        return table

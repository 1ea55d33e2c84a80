"""``recnet traces cost``: a run's LLM calls, tokens and cost per operation, step and interaction.

Pipeline position: a trace report beside ``recnet.trace.report``. It sums the run's ``llm_calls``
rows (requests that reached the server: cache hits excluded) per operation and prints them in the
dry run's table (``recnet.dry_run.estimate_table``), so estimate, end-of-run figures and trace
read the same way.
"""

from __future__ import annotations

import json

from rich.table import Table

from recnet.brain.base import OperationCounts
from recnet.trace.report import resolve_run
from recnet.trace.store import TraceStore


def cost_table(store: TraceStore, run_id: str | None) -> Table:
    """Calls, prompt/output tokens and cost per operation of one run (the latest by default)."""
    from recnet.dry_run import estimate_table, measured

    run = resolve_run(store, run_id)
    rid = str(run["run_id"])
    counts = OperationCounts()
    for row in store.read("llm_calls", rid):
        if row["cache_hit"]:
            continue
        counts.add(
            str(row["operation"]),
            prompt_tokens=int(row["tokens_in"] or 0),
            output_tokens=int(row["tokens_out"] or 0),
        )
    scenario = json.loads(run["scenario_json"] or "{}")
    llm = scenario.get("llm") or {}
    model = str(llm.get("model", "?"))
    price = (llm.get("budget") or {}).get("prices", {}).get(model)
    figures = measured(
        counts,
        model=model,
        train_interactions=store.count("interactions", rid),
        steps=store.count("steps", rid),
        max_output_tokens=int(llm.get("max_tokens", 0)),
        price=tuple(price) if price else None,  # type: ignore[arg-type]
    )
    table = estimate_table(figures, title=f"LLM use of run {rid} with {model} (from the trace)")
    if not counts.counts:
        table.caption = "no LLM calls in this run (the offline brain makes none)"
    return table

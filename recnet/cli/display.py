"""What ``recnet simulate`` shows: a one-line dataset summary, step progress and the metrics table.

Pipeline position: the CLI's presentation layer, fed by the runner's callbacks (``on_prepared``,
``on_step``) and its ``RunResult``. Everything prints through one ``rich`` console, so progress
bars redraw in a terminal and collapse to a single final line when stdout is a file or a CI log.
"""

from __future__ import annotations

import re
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # the runner pulls in the whole pipeline; `recnet --help` should not
    from recnet.runner import Prepared, RunResult

_FAMILIES = ("ndcg", "hr", "recall", "precision", "mrr")
_LABELS = {"ndcg": "NDCG", "hr": "HR", "recall": "Recall", "precision": "Precision", "mrr": "MRR"}


def dataset_line(prepared: Prepared) -> str:
    """``dataset <name>: U users, I items, T train interactions, E test users, S steps``."""
    dataset = prepared.dataset
    return (
        f"dataset {dataset.name}: {len(dataset.users):,} users, {len(dataset.items):,} items, "
        f"{len(prepared.split.train):,} train interactions, "
        f"{len(prepared.test_candidates):,} test users, {len(prepared.batches):,} forward steps"
    )


class StepProgress:
    """A progress bar over forward steps, driven by the runner's callbacks.

    Use as a context manager around the run; pass ``on_prepared`` and ``on_step`` to
    ``recnet.runner.simulate``. With ``enabled=False`` it prints nothing at all.
    """

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> StepProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._task is not None:
            self._progress.update(self._task, description="done")
        self._progress.__exit__(exc_type, exc, tb)

    def on_prepared(self, prepared: Prepared) -> None:
        if not self.enabled:
            return
        self.console.print(Text(dataset_line(prepared)), highlight=False, soft_wrap=True)
        total = len(prepared.batches)
        self._task = self._progress.add_task(
            "forward" if total else "evaluating", total=max(total, 1), completed=0
        )

    def on_step(self, step: int, total: int) -> None:
        if self._task is None:
            return
        done = step + 1
        description = "evaluating" if done >= total else "forward"
        self._progress.update(self._task, completed=done, total=total, description=description)


def _metric_key(name: str) -> tuple[int, int, str]:
    match = re.fullmatch(r"([a-z_]+)(?:@(\d+))?", name.lower())
    family, k = (match.group(1), int(match.group(2) or 0)) if match else (name, 0)
    rank = _FAMILIES.index(family) if family in _FAMILIES else len(_FAMILIES)
    return rank, k, name


def metric_label(name: str) -> str:
    """``ndcg@5`` → ``NDCG@5``, ``mrr`` → ``MRR``."""
    family, at, k = name.partition("@")
    return _LABELS.get(family.lower(), family) + (f"@{k}" if at else "")


def metrics_table(metrics: dict[str, dict[str, float]], title: str = "Test metrics") -> Table:
    """Models as rows (RecNet first, then baselines in run order); best value per column bold."""
    models = sorted(metrics, key=lambda m: m != "recnet")  # stable: keeps the baselines' order
    names = sorted({name for values in metrics.values() for name in values}, key=_metric_key)
    best = {
        name: max(values[name] for values in metrics.values() if name in values) for name in names
    }
    table = Table(title=title, caption="best per column in bold")
    table.add_column("model")
    for name in names:
        table.add_column(metric_label(name), justify="right")
    for model in models:
        cells: list[Text] = [Text(model)]
        for name in names:
            value = metrics[model].get(name)
            if value is None:
                cells.append(Text("–"))
            else:
                cells.append(Text(f"{value:.4f}", style="bold" if value == best[name] else ""))
        table.add_row(*cells)
    return table


def result_lines(result: RunResult) -> list[str]:
    """The lines printed under the metrics table: the run, where its trace is, what to run next."""
    return [
        f"run {result.run_id}: {result.n_steps:,} steps, {result.n_train:,} train interactions, "
        f"{result.n_test_users:,} test users, {result.seconds:.1f} s",
        f"trace: {result.trace_path}",
        f"inspect it: recnet traces metrics {result.trace_path}  (also: runs, agent, messages)",
    ]


def answer_warnings(result: RunResult) -> list[str]:
    """Why the run's LLM answers are not all the model's own (fallbacks per operation, answers
    replayed from another server); empty for a clean run or an offline brain."""
    warnings = getattr(result.llm_stats, "warnings", None)
    return list(warnings()) if callable(warnings) else []


def prequential_table(result: RunResult) -> Table | None:
    """Test-then-train metrics of the training stream: overall, then per window of steps."""
    summary = result.prequential
    if summary is None:
        return None
    top = max(int(n.partition("@")[2]) for n in summary.overall if "@" in n)
    names = [n for n in (f"ndcg@{top}", f"hr@{top}", "mrr") if n in summary.overall]
    table = Table(
        title="Prequential (each training interaction ranked before it is learned)",
        caption=f"{summary.n_evaluated:,} interactions ranked against sampled unseen items",
    )
    table.add_column("steps")
    table.add_column("n", justify="right")
    for name in names:
        table.add_column(metric_label(name), justify="right")
    rows = [("all", summary.n_evaluated, summary.overall)]
    rows += [(f"{first}-{last}", n, values) for first, last, n, values in summary.windows]
    for label, n, values in rows:
        table.add_row(label, f"{n:,}", *(f"{values[name]:.4f}" for name in names))
    return table


def show_result(console: Console, result: RunResult) -> None:
    warnings = answer_warnings(result)
    title = "Test metrics (NOT the model's alone: see the warning below)" if warnings else None
    console.print(metrics_table(result.metrics, title) if title else metrics_table(result.metrics))
    prequential = prequential_table(result)
    if prequential is not None:
        console.print(prequential)
    if result.llm_stats is not None:  # calls, cache hits, retries, repairs, fallbacks
        console.print(result.llm_stats.table())  # type: ignore[attr-defined]
        if result.operation_counts is not None and result.scenario is not None:
            console.print(measured_table(result))
    for line in warnings:
        console.print(Text(f"warning: {line}", style="bold red"), highlight=False, soft_wrap=True)
    if warnings:
        console.print(
            Text(
                "warning: recnet's metrics above mix in the reference policy's or another "
                "server's answers (metrics.flag marks them in the trace)",
                style="bold red",
            ),
            highlight=False,
            soft_wrap=True,
        )
    for line in result_lines(result):
        console.print(Text(line), highlight=False, soft_wrap=True)


def measured_table(result: RunResult) -> Table:
    """Calls, tokens and cost per operation, per step and per training interaction, as sent."""
    from recnet.dry_run import estimate_table, measured

    scenario = result.scenario
    assert scenario is not None and result.operation_counts is not None
    figures = measured(
        result.operation_counts,
        model=scenario.llm.model,
        train_interactions=result.n_train,
        steps=result.n_steps,
        max_output_tokens=scenario.llm.max_tokens,
        price=scenario.llm.budget.prices.get(scenario.llm.model),
    )
    return estimate_table(figures, title=f"Measured LLM use with {scenario.llm.model}")

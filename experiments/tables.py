"""Aggregating per-seed records into mean ± std and writing them as CSV and Markdown.

Pipeline position: after ``experiments.harness.run_jobs``; used by every experiment script.
Standard deviations are sample standard deviations over seeds (``ddof=1``); with one seed the
std is reported as 0 and the Markdown shows the mean alone.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Record = dict[str, Any]


def group_records(records: Iterable[Record], keys: Sequence[str]) -> dict[tuple, list[Record]]:
    """Records grouped by ``keys``, groups in order of first appearance."""
    groups: dict[tuple, list[Record]] = {}
    for record in records:
        groups.setdefault(tuple(record.get(k) for k in keys), []).append(record)
    return groups


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single value); NaN for no values."""
    arr = np.asarray([v for v in values if v is not None and not _isnan(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def aggregate(
    records: Iterable[Record], keys: Sequence[str], columns: Sequence[str]
) -> list[Record]:
    """One row per group: the keys, ``n`` ok seeds, ``<col>_mean``/``<col>_std``, status, note."""
    rows = []
    for group, members in group_records(records, keys).items():
        ok = [r for r in members if r.get("status") == "ok"]
        row: Record = dict(zip(keys, group, strict=True))
        row["n"] = len(ok)
        row["seeds"] = " ".join(str(r.get("seed")) for r in ok)
        statuses = sorted({str(r.get("status")) for r in members})
        row["status"] = "ok" if statuses == ["ok"] else "/".join(statuses)
        notes = [str(r.get("note")) for r in members if r.get("note")]
        row["note"] = notes[0] if notes else ""
        for column in columns:
            mean, std = mean_std([r.get(column) for r in ok])
            row[f"{column}_mean"] = mean
            row[f"{column}_std"] = std
        rows.append(row)
    return rows


def pm(row: Record, column: str, digits: int = 4) -> str:
    """``mean ± std`` of ``column`` in an aggregated row ("–" when missing)."""
    mean, std = row.get(f"{column}_mean"), row.get(f"{column}_std")
    if mean is None or _isnan(mean):
        return "–"
    if row.get("n", 0) <= 1 or std is None or _isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def number(value: Any, digits: int = 1) -> str:
    if value is None or _isnan(value):
        return "–"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells is escaped)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return "\n".join(lines)


def write_csv(rows: Sequence[Record], path: Path) -> Path:
    """Rows as CSV with the union of their keys as header (first-seen order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return path


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def paired_lift(
    records: Iterable[Record], model: str, reference: str, column: str, by: str = "seed"
) -> tuple[float, float, float, int]:
    """Mean of per-seed differences ``model - reference`` in ``column`` and its 95 % t-interval.

    Returns ``(mean, low, high, n)``; NaNs when fewer than one shared seed (with one seed the
    interval is NaN: no spread to estimate).
    """
    from scipy import stats

    values: dict[str, dict[Any, float]] = {model: {}, reference: {}}
    for record in records:
        name = record.get("model")
        value = record.get(column)
        usable = value is not None and not _isnan(value)
        if name in values and record.get("status") == "ok" and usable:
            values[name][record.get(by)] = float(value)
    shared = sorted(set(values[model]) & set(values[reference]), key=str)
    diffs = np.array([values[model][s] - values[reference][s] for s in shared])
    if diffs.size == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(diffs.mean())
    if diffs.size == 1:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / math.sqrt(diffs.size))
    return mean, mean - half, mean + half, int(diffs.size)


def lift_text(lift: tuple[float, float, float, int], digits: int = 4) -> str:
    """``+0.0123 [+0.0040, +0.0206]`` (the interval only when there is one)."""
    mean, low, high, n = lift
    if n == 0 or _isnan(mean):
        return "–"
    if n == 1 or _isnan(low):
        return f"{mean:+.{digits}f} (1 seed)"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"

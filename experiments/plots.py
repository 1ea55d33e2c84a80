"""PNG figures of the experiment scripts (matplotlib, Agg backend: no display needed).

Pipeline position: last step of each script, reading the aggregated rows of
``experiments.tables.aggregate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

Record = dict[str, Any]


def bar_chart(
    panels: Sequence[tuple[str, Sequence[Record]]],
    metrics: Sequence[str],
    path: Path,
    *,
    label_of: dict[str, str],
) -> Path:
    """Grouped bars (one group per model, one bar per metric) with ±std error bars; one panel per
    dataset. Rows without an ok seed are left out."""
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, 3.6 * len(panels)), squeeze=False, constrained_layout=True
    )
    width = 0.8 / max(len(metrics), 1)
    for ax, (title, rows) in zip(axes[:, 0], panels, strict=True):
        rows = [r for r in rows if r.get("n", 0) > 0]
        x = np.arange(len(rows))
        for k, metric in enumerate(metrics):
            means = [r[f"{metric}_mean"] for r in rows]
            stds = [r[f"{metric}_std"] for r in rows]
            ax.bar(x + (k - (len(metrics) - 1) / 2) * width, means, width, yerr=stds,
                   capsize=3, label=metric.upper())  # fmt: skip
        ax.set_xticks(x, [label_of.get(r["model"], r["model"]) for r in rows], rotation=20,
                      ha="right", fontsize=8)  # fmt: skip
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncols=len(metrics))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def line_panels(
    panels: Sequence[dict[str, Any]],
    path: Path,
    *,
    ncols: int = 2,
    title: str = "",
    panel_size: tuple[float, float] = (5.5, 3.8),
) -> Path:
    """Line plots with error bars. Each panel: ``title``, ``xlabel``, ``ylabel``, ``series`` =
    list of (label, xs, means, stds), optional ``hlines`` = list of (label, y), ``log_x``, ``ymin``,
    and ``band`` (a shaded ±std band instead of error bars, clipped to ``clip`` = (low, high))."""
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        for k, (label, xs, means, stds) in enumerate(panel["series"]):
            if panel.get("band"):  # many points: a line with a shaded ±std band
                low = np.clip(
                    np.asarray(means) - np.asarray(stds), *panel.get("clip", (None, None))
                )
                high = np.clip(
                    np.asarray(means) + np.asarray(stds), *panel.get("clip", (None, None))
                )
                ax.plot(xs, means, color=f"C{k}", label=label)
                ax.fill_between(xs, low, high, color=f"C{k}", alpha=0.15)
            else:
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        for k, (label, y) in enumerate(panel.get("hlines", [])):
            ax.axhline(y, linestyle="--", color=f"C{k + 5}", alpha=0.8, label=label)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        if panel.get("log_x"):
            ax.set_xscale("log")
        if "ymin" in panel:
            ax.set_ylim(bottom=panel["ymin"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

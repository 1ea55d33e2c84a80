"""Charts of the HTML report: matplotlib figures rendered to inline SVG strings.

Pipeline position: between ``recnet.report.data`` (numbers read from the trace) and
``recnet.report.page`` (the HTML). Each function takes one or more ``RunData`` (several = the
comparison mode: curves overlaid, one colour per run) and returns an SVG string, or None when the
trace holds nothing to draw (the page then says so instead of showing an empty chart).

No pyplot and no global state: every chart is a fresh ``matplotlib.figure.Figure``. Text stays
text in the SVG (``svg.fonttype=none``) to keep the file small, ids are salted per chart so that
several SVGs can share one page, and every artist that draws data gets an id starting with
``data-`` (the browser test checks each chart has some).
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from recnet.report.data import RunData

WIDTH = 7.6
HEIGHT = 2.7
STATUS_COLOURS = {
    "accepted": "#2e7d32",
    "rejected": "#c62828",
    "dropped": "#f9a825",
    "buffered": "#78909c",
}
REACH_LABEL = {"message": "reached", "accepted": "accepted one"}
_counter = itertools.count()


@contextmanager
def chart(height: float = HEIGHT, ncols: int = 1) -> Iterator[tuple[Figure, list]]:
    """A figure with ``ncols`` axes; yields (figure, axes) and keeps the SVG on ``figure.svg``."""
    salt = f"c{next(_counter)}"
    with matplotlib.rc_context(
        {
            "svg.fonttype": "none",
            "svg.hashsalt": salt,
            "font.size": 8,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.frameon": False,
        }
    ):
        figure = Figure(figsize=(WIDTH, height))
        axes = list(np.atleast_1d(figure.subplots(1, ncols, gridspec_kw={"wspace": 0.45})))
        yield figure, axes
        buffer = io.StringIO()
        # a tight bounding box (one extra layout pass) is cheaper than constrained layout
        figure.savefig(
            buffer, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.05
        )
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    # group ids (axes_1, line2d_3, ...) repeat in every figure: make them unique on the page
    figure.svg = re.sub(r'id="([A-Za-z]+[A-Za-z0-9]*_\d+)"', rf'id="{salt}_\1"', text)


def mark(*artists: object) -> None:
    """Give data artists ids ``data-<n>`` (the browser test looks for them)."""
    for artist in artists:
        for one in artist if isinstance(artist, list | tuple) else [artist]:
            one.set_gid(f"data-{next(_counter)}")  # type: ignore[attr-defined]


def rolling(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` entries (shorter at the start)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def window_for(n: int) -> int:
    return max(1, n // 40)


def _colours(n: int) -> list[str]:
    return [f"C{i % 10}" for i in range(n)]


def _svg(
    build: Callable[[Figure, list], bool], height: float = HEIGHT, ncols: int = 1
) -> str | None:
    with chart(height, ncols) as (figure, axes):
        drew = build(figure, axes)
    return figure.svg if drew else None


# -- metrics over time -----------------------------------------------------------------------------


def accuracy_chart(runs: Sequence[RunData]) -> str | None:
    """Training choice accuracy per step (and backward-phase feedback accuracy when recorded)."""

    def build(figure: Figure, axes: list) -> bool:
        ax = axes[0]
        drew = False
        for run, colour in zip(runs, _colours(len(runs)), strict=True):
            s = run.steps
            if len(s.step) == 0:
                continue
            correct = s.n_correct / np.maximum(s.n_interactions, 1)
            w = window_for(len(s.step))
            prefix = f"{run.label}: " if len(runs) > 1 else ""
            (line,) = ax.plot(
                s.step,
                rolling(correct, w),
                color=colour,
                lw=1.4,
                label=f"{prefix}choice accuracy (mean of {w} steps)",
            )
            mark(line)
            if run.feedback is not None:
                (fb,) = ax.plot(
                    run.feedback["step"],
                    rolling(run.feedback["accuracy"], w),
                    color=colour,
                    lw=1,
                    ls="--",
                    label=f"{prefix}feedback top-1",
                )
                mark(fb)
            drew = True
        ax.set_xlabel("step")
        ax.set_ylabel("share correct")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right")
        return drew

    return _svg(build)


def prequential_chart(runs: Sequence[RunData]) -> str | None:
    """Prequential (test-then-train) NDCG@10, HR@10 and MRR per step."""
    if not any(r.prequential is not None for r in runs):
        return None

    def build(figure: Figure, axes: list) -> bool:
        ax = axes[0]
        styles = {"ndcg@10": "-", "hr@10": ":", "mrr": "--"}
        for run, colour in zip(runs, _colours(len(runs)), strict=True):
            p = run.prequential
            if p is None:
                continue
            w = window_for(len(p["step"]))
            for metric, style in styles.items():
                prefix = f"{run.label}: " if len(runs) > 1 else ""
                (line,) = ax.plot(
                    p["step"],
                    rolling(p[metric], w),
                    color=colour,
                    ls=style,
                    lw=1.3,
                    label=f"{prefix}{metric}",
                )
                mark(line)
        ax.set_xlabel("step")
        ax.set_ylabel(f"prequential (mean of {window_for(len(runs[0].steps.step))} steps)")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right", ncols=3)
        return True

    return _svg(build)


# -- propagation ------------------------------------------------------------------------------


def messages_chart(runs: Sequence[RunData]) -> str | None:
    """Messages sent per step and what became of them (stacked for one run, lines for several)."""

    def build(figure: Figure, axes: list) -> bool:
        ax = axes[0]
        if len(runs) == 1:
            s = runs[0].steps
            if len(s.step) == 0 or s.n_messages.sum() == 0:
                return False
            w = window_for(len(s.step))
            layers = [rolling(getattr(s, f"n_{k}"), w) for k in ("accepted", "rejected", "dropped")]
            mark(
                ax.stackplot(
                    s.step,
                    *layers,
                    labels=["accepted", "rejected", "dropped"],
                    colors=[STATUS_COLOURS[k] for k in ("accepted", "rejected", "dropped")],
                    alpha=0.8,
                )
            )
            (sent,) = ax.plot(s.step, rolling(s.n_messages, w), color="black", lw=1, label="sent")
            mark(sent)
            ax.set_ylabel(f"messages per step (mean of {w})")
        else:
            drew = False
            for run, colour in zip(runs, _colours(len(runs)), strict=True):
                s = run.steps
                if len(s.step) == 0:
                    continue
                w = window_for(len(s.step))
                (a,) = ax.plot(
                    s.step,
                    rolling(s.n_messages, w),
                    color=colour,
                    lw=1.3,
                    label=f"{run.label}: sent",
                )
                (b,) = ax.plot(
                    s.step,
                    rolling(s.n_accepted, w),
                    color=colour,
                    lw=1,
                    ls="--",
                    label=f"{run.label}: accepted",
                )
                mark(a, b)
                drew = drew or bool(s.n_messages.sum())
            if not drew:
                return False
            ax.set_ylabel("messages per step")
        ax.set_xlabel("step (decisions are counted in the step they were made)")
        ax.legend(loc="upper right", ncols=2)
        return True

    return _svg(build)


def rules_chart(run: RunData) -> str | None:
    """Message fates per filter rule (or buffer policy) that decided them."""
    if not run.rule_fates:
        return None
    rules = sorted({r for r, _, _ in run.rule_fates})
    statuses = [s for s in STATUS_COLOURS if any(st == s for _, st, _ in run.rule_fates)]
    counts = {(r, s): n for r, s, n in run.rule_fates}

    def build(figure: Figure, axes: list) -> bool:
        ax = axes[0]
        left = np.zeros(len(rules))
        for status in statuses:
            values = np.array([counts.get((r, status), 0) for r in rules], dtype=float)
            bars = ax.barh(rules, values, left=left, color=STATUS_COLOURS[status], label=status)
            mark(list(bars))
            left += values
        ax.set_xlabel("messages")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return True

    return _svg(build, height=max(1.6, 0.35 * len(rules) + 0.9))


def multicast_chart(runs: Sequence[RunData]) -> str | None:
    """Histogram of recipients per multicast (one router's send in one step)."""
    if not any(len(r.multicast_sizes) for r in runs):
        return None

    def build(figure: Figure, axes: list) -> bool:
        ax = axes[0]
        top = max(int(r.multicast_sizes.max()) for r in runs if len(r.multicast_sizes))
        bins = np.unique(np.linspace(0.5, top + 0.5, min(40, top) + 1).round())
        for run, colour in zip(runs, _colours(len(runs)), strict=True):
            if len(run.multicast_sizes) == 0:
                continue
            median = float(np.median(run.multicast_sizes))
            _, _, patches = ax.hist(
                run.multicast_sizes,
                bins=bins,
                color=colour,
                alpha=0.55 if len(runs) > 1 else 0.85,
                label=f"{run.label + ': ' if len(runs) > 1 else ''}"
                f"{len(run.multicast_sizes)} multicasts, median {median:g}",
            )
            mark(list(patches))
        ax.set_xlabel("recipients per multicast")
        if max(len(r.multicast_sizes) for r in runs) > 200:  # a long tail: show it
            ax.set_yscale("log")
            ax.set_ylabel("multicasts (log scale)")
        else:
            ax.set_ylabel("multicasts")
        ax.legend(loc="upper right")
        return True

    return _svg(build)


def reach_chart(runs: Sequence[RunData]) -> str | None:
    """Cumulative share of users and items that had received (and accepted) a message."""

    def build(figure: Figure, axes: list) -> bool:
        ax = axes[0]
        drew = False
        for run, colour in zip(runs, _colours(len(runs)), strict=True):
            steps = run.steps.step
            if len(steps) == 0:
                continue
            grid = np.arange(-1, int(steps.max()) + 2)
            prefix = f"{run.label}: " if len(runs) > 1 else ""
            for kind, style in (("user", "-"), ("item", ":")):
                total = run.reach[f"n_{kind}"]
                if not total or len(run.reach[f"{kind}_first_message"]) == 0:
                    continue
                for which, width in (("message", 1.4), ("accepted", 0.9)):
                    firsts = run.reach[f"{kind}_first_{which}"]
                    share = np.searchsorted(firsts, grid, side="right") / total
                    (line,) = ax.plot(
                        grid,
                        share,
                        color=colour,
                        ls=style,
                        lw=width,
                        alpha=1 if which == "message" else 0.6,
                        label=f"{prefix}{kind}s {REACH_LABEL[which]}",
                    )
                    mark(line)
                    drew = True
        ax.set_xlabel("step")
        ax.set_ylabel("share of clients")
        ax.set_ylim(0, 1.02)
        if drew:
            ax.legend(loc="upper left", ncols=2)
        return drew

    return _svg(build)


# -- routers ------------------------------------------------------------------------------


def router_count_chart(runs: Sequence[RunData]) -> str | None:
    """Routers alive after each step; splits (▲) and merges (▼) marked."""

    def build(figure: Figure, axes: list) -> bool:
        ax = axes[0]
        drew = False
        for run, colour in zip(runs, _colours(len(runs)), strict=True):
            steps, count = run.router_count
            if len(steps) == 0 or count.max() == 0:
                continue
            prefix = f"{run.label}: " if len(runs) > 1 else ""
            (line,) = ax.step(
                steps, count, where="post", color=colour, lw=1.4, label=f"{prefix}routers"
            )
            mark(line)
            drew = True
            for kind, marker in (("split", "^"), ("merge", "v")):
                at = [s for s, k, _ in run.router_events if k == kind]
                if at:
                    level = count[np.clip(np.searchsorted(steps, at), 0, len(count) - 1)]
                    mark(
                        ax.scatter(
                            at,
                            level,
                            marker=marker,
                            color=colour,
                            s=22,
                            zorder=3,
                            edgecolors="black",
                            linewidths=0.4,
                            label=f"{prefix}{kind}s ({len(at)})",
                        )
                    )
        ax.set_xlabel("step")
        ax.set_ylabel("routers")
        ax.legend(loc="best")
        return drew

    return _svg(build)


# -- LLM ------------------------------------------------------------------------------


def llm_operations_chart(run: RunData) -> str | None:
    if not run.llm_operations:
        return None
    names = [f"{o['operation']}" for o in run.llm_operations]

    def build(figure: Figure, axes: list) -> bool:
        calls_ax, tokens_ax = axes
        mark(list(calls_ax.barh(names, [o["calls"] for o in run.llm_operations], color="C0")))
        calls_ax.set_xlabel("calls")
        tokens_in = np.array([o["tokens_in"] for o in run.llm_operations], dtype=float)
        tokens_out = np.array([o["tokens_out"] for o in run.llm_operations], dtype=float)
        mark(list(tokens_ax.barh(names, tokens_in, color="C1", label="prompt")))
        mark(
            list(tokens_ax.barh(names, tokens_out, left=tokens_in, color="C2", label="completion"))
        )
        tokens_ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        tokens_ax.set_xlabel("tokens")
        tokens_ax.legend(loc="lower right")
        return True

    return _svg(build, height=max(1.8, 0.35 * len(names) + 1), ncols=2)


def llm_steps_chart(runs: Sequence[RunData]) -> str | None:
    """LLM calls and tokens per step; retries, repairs and fallbacks per step."""
    if not any(r.llm_steps is not None for r in runs):
        return None

    def build(figure: Figure, axes: list) -> bool:
        calls_ax, trouble_ax = axes
        for run, colour in zip(runs, _colours(len(runs)), strict=True):
            s = run.llm_steps
            if s is None:
                continue
            prefix = f"{run.label}: " if len(runs) > 1 else ""
            (a,) = calls_ax.plot(
                s["step"], s["calls"], color=colour, lw=1.2, label=f"{prefix}calls"
            )
            mark(a)
            twin = calls_ax.twinx()
            (b,) = twin.plot(
                s["step"],
                s["tokens_in"] + s["tokens_out"],
                color=colour,
                lw=0.9,
                ls=":",
                label=f"{prefix}tokens",
            )
            mark(b)
            twin.yaxis.set_major_formatter(EngFormatter(sep=""))
            twin.set_ylabel("tokens (dotted)")
            for name, style in (("retries", "-"), ("repairs", "--"), ("fallbacks", ":")):
                (c,) = trouble_ax.plot(
                    s["step"], s[name], color=colour, ls=style, lw=1.1, label=f"{prefix}{name}"
                )
                mark(c)
        calls_ax.set_xlabel("step (-1 = initialisation)")
        calls_ax.set_ylabel("calls")
        calls_ax.legend(loc="upper left")
        trouble_ax.set_xlabel("step")
        trouble_ax.set_ylabel("per step")
        trouble_ax.legend(loc="upper left")
        return True

    return _svg(build, ncols=2)

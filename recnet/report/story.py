"""One agent's story in the report (``recnet report --agent u:1``): charts of its messages and
choices.

Pipeline position: drawn by ``recnet.report.page`` from ``recnet.report.data.AgentStory``.
"""

from __future__ import annotations

import numpy as np

from recnet.report.charts import STATUS_COLOURS, Figure, _svg, mark
from recnet.report.data import AgentStory


def fates_chart(story: AgentStory) -> str | None:
    """Fates of the messages the agent received, per step they were decided (stacked bars)."""
    steps = sorted({s for per in story.fates_per_step.values() for s in per})
    if not steps:
        return None

    def build(figure: Figure, axes: list) -> bool:
        ax = axes[0]
        bottom = np.zeros(len(steps))
        width = max(0.8, (steps[-1] - steps[0] + 1) / 120)
        for status, colour in STATUS_COLOURS.items():
            per = story.fates_per_step.get(status)
            if not per:
                continue
            values = np.array([per.get(s, 0) for s in steps], dtype=float)
            bars = ax.bar(steps, values, bottom=bottom, color=colour, label=status, width=width)
            mark(list(bars))
            bottom += values
        ax.set_xlabel("step decided")
        ax.set_ylabel("messages")
        ax.legend(loc="upper right")
        return True

    return _svg(build)


def choices_chart(story: AgentStory) -> str | None:
    """The agent's running choice accuracy over its training interactions."""
    if not story.interactions:
        return None

    def build(figure: Figure, axes: list) -> bool:
        ax = axes[0]
        correct = np.array([bool(r["correct"]) for r in story.interactions], dtype=float)
        number = np.arange(1, len(correct) + 1)
        (line,) = ax.plot(number, np.cumsum(correct) / number, color="C0", lw=1.2)
        mark(line)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(
            f"{story.kind}'s training interactions, in order (steps "
            f"{story.interactions[0]['step']}–{story.interactions[-1]['step']})"
        )
        ax.set_ylabel("running choice accuracy")
        return True

    return _svg(build)

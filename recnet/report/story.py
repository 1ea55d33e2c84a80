"""One agent's story in the report (``recnet report --agent u:1``): read from the trace and
drawn.

Pipeline position: ``read_story`` is called by ``recnet.report.data.read_run`` (SQL, read-only
connection); the charts are drawn by ``recnet.report.page``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np

from recnet.errors import TraceError
from recnet.report.charts import STATUS_COLOURS, Figure, _svg, mark

STORY_ROWS = 200  # rows per table in an agent's story


@dataclass
class AgentStory:
    agent_id: str
    kind: str
    label: str | None
    profiles: list[dict[str, Any]]
    n_profiles: int
    messages: list[dict[str, Any]]
    n_messages: int
    fates_per_step: dict[str, dict[int, int]]  # status → step → count
    interactions: list[dict[str, Any]]
    n_interactions: int


def read_story(db: sqlite3.Connection, rid: str, agent_id: str) -> AgentStory:
    """One agent's profile versions, messages and their fates, and choices."""
    row = db.execute(
        "SELECT kind, label FROM agents WHERE run_id=? AND agent_id=?", (rid, agent_id)
    ).fetchone()
    if row is None:
        some = [
            r[0] for r in db.execute("SELECT agent_id FROM agents WHERE run_id=? LIMIT 5", (rid,))
        ]
        raise TraceError(
            f"--agent {agent_id}: no such agent in run {rid}",
            f"agent ids look like {', '.join(some)} (u: users, i: items, r: routers)",
        )
    kind, label = row

    def rows(sql: str, *args: object) -> list[dict[str, Any]]:
        return [dict(r) for r in db.execute(sql, (rid, *args, STORY_ROWS))]

    def count(sql: str, *args: object) -> int:
        return int(db.execute(sql, (rid, *args)).fetchone()[0])

    fates: dict[str, dict[int, int]] = {}
    for status, step, n in db.execute(
        "SELECT status, coalesce(decided_step, step), count(*) FROM messages "
        "WHERE run_id=? AND client_id=? GROUP BY 1, 2",
        (rid, agent_id),
    ):
        fates.setdefault(status, {})[step] = n
    column = "item_id" if kind == "item" else "user_id"
    return AgentStory(
        agent_id=agent_id,
        kind=kind,
        label=label,
        profiles=rows(
            "SELECT step, kind, reason, text FROM profile_versions WHERE run_id=? AND agent_id=? "
            "ORDER BY id LIMIT ?",
            agent_id,
        ),
        n_profiles=count(
            "SELECT count(*) FROM profile_versions WHERE run_id=? AND agent_id=?", agent_id
        ),
        messages=rows(
            "SELECT step, router_id, score, status, rule_id, decided_step FROM messages "
            "WHERE run_id=? AND client_id=? ORDER BY id LIMIT ?",
            agent_id,
        ),
        n_messages=count("SELECT count(*) FROM messages WHERE run_id=? AND client_id=?", agent_id),
        fates_per_step=fates,
        interactions=rows(
            "SELECT seq, step, user_id, item_id, negative_id, chosen_id, correct "
            f"FROM interactions WHERE run_id=? AND {column}=? ORDER BY seq LIMIT ?",
            agent_id,
        ),
        n_interactions=count(
            f"SELECT count(*) FROM interactions WHERE run_id=? AND {column}=?", agent_id
        ),
    )


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

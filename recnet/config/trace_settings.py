"""Pydantic model of a scenario's ``trace`` block: what the SQLite trace records and when.

Pipeline position: part of the scenario (``recnet.config.scenario.Scenario.trace``); read by the
runner (trace path, checkpoints), the forward phase (message and profile trace levels) and the
trace store (batch size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from recnet.config.llm_settings import Section


class TraceSettings(Section):
    """The SQLite trace of a run."""

    checkpoint_every: int = Field(
        0,
        ge=0,
        description="Save a resumable checkpoint every N steps (0 = auto: every step with an "
        "LLM brain, every 100 steps offline). `recnet simulate --resume` continues from the "
        "newest.",
    )
    dir: Path = Field(Path("runs"), description="Folder for run databases.")
    path: Path | None = Field(None, description="Explicit database file (overrides dir).")
    batch_size: int = Field(2000, ge=1, description="Rows buffered before one write.")
    messages: Literal["auto", "all", "sampled", "aggregate", "none"] = Field(
        "auto",
        description="Router→client messages in the trace: all (a row per message), sampled (a "
        "row for a seeded share, message_share; exact per-router counts in message_counts), "
        "aggregate (per step, router and fate counts only), none; auto = all for worlds of at "
        "most 20,000 clients, else sampled (a million-agent run's trace stays a few GB). The "
        "level in force is stated in runs.trace_messages.",
    )
    message_share: float = Field(
        0.01,
        gt=0.0,
        le=1.0,
        description="With messages=sampled: the share of messages that get a row (chosen by a "
        "hash of the seed and the message id).",
    )
    profiles: Literal["auto", "changed", "sampled", "none"] = Field(
        "auto",
        description="Profile versions in the trace: changed (every version of every client "
        "that changed), sampled (the same for a seeded share of clients, profile_share; a "
        "sampled client's history is complete), none; auto = changed for worlds of at most "
        "20,000 clients, else sampled (written at a million agents, every client's last "
        "versions are two million rows, ~4 GB). The last checkpoint holds every client's "
        "final profiles either way. The level in force is stated in runs.trace_profiles.",
    )
    profile_share: float = Field(
        0.01,
        gt=0.0,
        le=1.0,
        description="With profiles=sampled: the share of clients whose profile versions are "
        "written (chosen by a hash of the seed and the client's position).",
    )
    profile_every: int = Field(
        0,
        ge=0,
        description="Write changed profiles every N steps (and always at the last step); larger "
        "values keep big runs' trace files small. 0 = auto: every 10 steps for worlds of at "
        "most 20,000 clients, else only at the last step.",
    )
    router_every: int = Field(
        0,
        ge=0,
        description="Write the new versions of routers that integrated changes every N steps "
        "(and always at the last step; each router's version current then); router splits, "
        "merges and backward-phase edits are always written. 0 = auto: every step for worlds of "
        "at most 20,000 clients, else as profile_every (a router per 25 users, every step, was "
        "a tenth of a 30k-agent trace).",
    )

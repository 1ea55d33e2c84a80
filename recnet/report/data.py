"""What the HTML report shows, read from a trace with SQL aggregates (read-only, WAL-safe).

Pipeline position: the reading end of the trace store, like ``recnet.trace.report`` (terminal
tables), but for ``recnet report``: one ``RunData`` per run, each field the input of one chart or
table (``recnet.report.charts``, ``recnet.report.page``). The database is opened read-only
(``mode=ro``), so a trace that a running simulation is still writing can be read; only committed
steps are seen. Everything heavy is aggregated inside SQLite (GROUP BY), never row by row in
Python, so the full MovieLens trace reads in about a second.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recnet.errors import TraceError
from recnet.report.validation import Validation, read_validation
from recnet.trace.levels import profile_note

if TYPE_CHECKING:
    from recnet.report.story import AgentStory

TOP_CHANGED = 5  # routers and rules shown in the lineage tables
PREQUENTIAL_K = 10


@dataclass
class StepSeries:
    """Per-step columns of the ``steps`` table (one entry per committed forward step)."""

    step: np.ndarray
    n_interactions: np.ndarray
    n_correct: np.ndarray
    n_messages: np.ndarray
    n_accepted: np.ndarray
    n_rejected: np.ndarray
    n_dropped: np.ndarray
    n_routers_updated: np.ndarray


@dataclass
class Lineage:
    """Versions of one changed router or filter rule, oldest first."""

    key: str  # router id, or "<agent> <rule id>"
    versions: list[dict[str, Any]]


@dataclass
class RouterGraph:
    """Client → router memberships from the newest checkpoint (the router–client graph)."""

    step: int
    memberships: dict[str, dict[str, float]]  # client id → router id → score
    router_labels: dict[str, str]


@dataclass
class RunData:
    path: Path
    run: dict[str, Any]
    scenario: dict[str, Any]
    versions: dict[str, str]
    metrics: dict[str, dict[str, float]]  # model → metric → value (test, newest evaluation)
    steps: StepSeries
    prequential: dict[str, np.ndarray] | None  # step, n, ndcg@10, hr@10, mrr
    feedback: dict[str, np.ndarray] | None  # backward_steps: step, accuracy, mean 1/rank
    rule_fates: list[tuple[str, str, int]]  # (rule id, status, messages)
    rule_texts: dict[str, str]
    multicast_sizes: np.ndarray  # recipients per (step, router) multicast
    reach: dict[str, Any]
    router_count: tuple[np.ndarray, np.ndarray]  # step, routers alive after it
    router_events: list[tuple[int, str, str]]  # (step, split|merge, description)
    router_lineage: list[Lineage]
    rule_lineage: list[Lineage]
    graph: RouterGraph | None
    llm_operations: list[dict[str, Any]]
    llm_steps: dict[str, np.ndarray] | None
    story: AgentStory | None = None  # recnet.report.story, with --agent
    validation: Validation | None = None  # recnet.report.validation: the backward gate
    label: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])


def connect(path: Path) -> sqlite3.Connection:
    """Open a trace read-only; a missing or foreign file is a ``TraceError``."""
    if not path.is_file():
        raise TraceError(f"no trace file {path}", "pass a .sqlite file written by recnet simulate")
    try:
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("SELECT run_id FROM runs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise TraceError(
            f"{path} is not a recnet trace ({exc})",
            "pass a .sqlite file written by recnet simulate",
        ) from None
    return db


def tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def pick_run(db: sqlite3.Connection, path: Path, run_id: str | None) -> dict[str, Any]:
    runs = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY started_at")]
    if not runs:
        raise TraceError(f"{path} holds no run", "pass the trace of a run that has started")
    if run_id is None:
        return runs[-1]
    for run in runs:
        if run["run_id"] == run_id:
            return run
    known = ", ".join(r["run_id"] for r in runs[-5:])
    raise TraceError(f"no run {run_id!r} in {path}", f"runs in it: {known}")


def read_run(path: Path | str, *, run_id: str | None = None, agent: str | None = None) -> RunData:
    """Everything the report shows about one run of the trace at ``path`` (newest by default)."""
    path = Path(path)
    db = connect(path)
    try:
        run = pick_run(db, path, run_id)
        rid = run["run_id"]
        present = tables(db)
        scenario = json.loads(run["scenario_json"])
        data = RunData(
            path=path,
            run=run,
            scenario=scenario,
            versions=json.loads(run["versions_json"] or "{}"),
            metrics=read_metrics(db, rid),
            steps=read_steps(db, rid),
            prequential=read_prequential(db, rid) if "prequential" in present else None,
            feedback=read_feedback(db, rid) if "backward_steps" in present else None,
            rule_fates=[
                (r[0] or "(no rule)", r[1], r[2])
                for r in db.execute(
                    "SELECT rule_id, status, count(*) FROM messages WHERE run_id=? "
                    "GROUP BY rule_id, status ORDER BY rule_id, status",
                    (rid,),
                )
            ],
            rule_texts={
                r[0]: r[1]
                for r in db.execute(
                    "SELECT rule_id, text FROM filter_rule_versions WHERE run_id=? "
                    "ORDER BY step, version",
                    (rid,),
                )
            },
            multicast_sizes=read_multicast_sizes(db, rid, run, present),
            reach=read_reach(db, rid),
            router_count=read_router_count(db, rid, run),
            router_events=read_router_events(db, rid, present),
            router_lineage=read_router_lineage(db, rid),
            rule_lineage=read_rule_lineage(db, rid),
            graph=read_graph(db, rid),
            llm_operations=read_llm_operations(db, rid, scenario),
            llm_steps=read_llm_steps(db, rid),
        )
        if "optimizations" in present:
            data.validation = read_validation(db, rid)
        if agent is not None:
            from recnet.report.story import read_story

            data.story = read_story(db, rid, agent)
        level = run.get("trace_messages") or scenario.get("trace", {}).get("messages")
        if level not in (None, "all", "auto"):
            data.notes.append(
                f"trace.messages={level}: message fates per rule, reach and the agent's messages "
                "come from the message rows recorded at this level; per-step totals and "
                "recipients per multicast are exact (steps, message_counts)"
            )
        profiles = run.get("trace_profiles")
        if agent is not None and profiles not in (None, "changed"):
            data.notes.append(str(profile_note(profiles)))
        return data
    finally:
        db.close()


def read_metrics(db: sqlite3.Connection, rid: str) -> dict[str, dict[str, float]]:
    rows = db.execute(
        "SELECT model, metric, value FROM metrics WHERE run_id=? AND split='test' AND "
        "step=(SELECT max(step) FROM metrics WHERE run_id=? AND split='test')",
        (rid, rid),
    )
    found: dict[str, dict[str, float]] = {}
    for model, metric, value in rows:
        found.setdefault(model, {})[metric] = value
    return found


def read_steps(db: sqlite3.Connection, rid: str) -> StepSeries:
    columns = [f.name for f in StepSeries.__dataclass_fields__.values()]
    rows = db.execute(
        f"SELECT {', '.join(columns)} FROM steps WHERE run_id=? ORDER BY step", (rid,)
    ).fetchall()
    matrix = np.array(rows, dtype=np.int64).reshape(len(rows), len(columns))
    return StepSeries(**{name: matrix[:, i] for i, name in enumerate(columns)})


def read_prequential(db: sqlite3.Connection, rid: str) -> dict[str, np.ndarray] | None:
    """Per-step prequential NDCG@10, HR@10 and MRR from (step, rank, count) groups."""
    try:
        rows = db.execute(
            "SELECT step, rank, count(*) FROM prequential WHERE run_id=? GROUP BY step, rank",
            (rid,),
        ).fetchall()
    except sqlite3.OperationalError:  # a prequential table of another layout: not shown
        return None
    if not rows:
        return None
    table = np.array(rows, dtype=np.float64)
    steps, where = np.unique(table[:, 0], return_inverse=True)
    rank, count = table[:, 1], table[:, 2]
    n = np.bincount(where, weights=count)
    hit = rank <= PREQUENTIAL_K
    gain = np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0)
    return {
        "step": steps.astype(np.int64),
        "n": n,
        f"ndcg@{PREQUENTIAL_K}": np.bincount(where, weights=gain * count) / n,
        f"hr@{PREQUENTIAL_K}": np.bincount(where, weights=hit * count) / n,
        "mrr": np.bincount(where, weights=count / rank) / n,
    }


def read_feedback(db: sqlite3.Connection, rid: str) -> dict[str, np.ndarray] | None:
    rows = db.execute(
        "SELECT step, n_predictions, n_correct, mean_rank_signal FROM backward_steps "
        "WHERE run_id=? AND n_predictions > 0 ORDER BY step",
        (rid,),
    ).fetchall()
    if not rows:
        return None
    table = np.array(rows, dtype=np.float64)
    return {
        "step": table[:, 0].astype(np.int64),
        "accuracy": table[:, 2] / table[:, 1],
        "mean 1/rank": table[:, 3],
    }


def read_multicast_sizes(
    db: sqlite3.Connection, rid: str, run: dict[str, Any], present: set[str]
) -> np.ndarray:
    """Recipients per (step, router) multicast: exact ``message_counts`` when the trace level
    did not record every message row, else counted from the rows."""
    level = run.get("trace_messages")
    if level not in (None, "all") and "message_counts" in present:
        sql = "SELECT sum(n) FROM message_counts WHERE run_id=? GROUP BY step, router_id"
    else:
        sql = "SELECT count(*) FROM messages WHERE run_id=? GROUP BY step, router_id"
    return np.array([r[0] for r in db.execute(sql, (rid,))], dtype=np.int64)


def read_reach(db: sqlite3.Connection, rid: str) -> dict[str, Any]:
    """Share of users and items that any message (and any accepted message) reached, over time."""
    totals = dict(
        db.execute(
            "SELECT kind, count(*) FROM agents WHERE run_id=? GROUP BY kind", (rid,)
        ).fetchall()
    )
    first = db.execute(
        "SELECT substr(client_id, 1, 1), min(step), "
        "min(CASE WHEN status='accepted' THEN step END) FROM messages WHERE run_id=? "
        "GROUP BY client_id",
        (rid,),
    ).fetchall()
    reach: dict[str, Any] = {"n_user": totals.get("user", 0), "n_item": totals.get("item", 0)}
    for prefix, kind in (("u", "user"), ("i", "item")):
        sent = np.array([r[1] for r in first if r[0] == prefix], dtype=np.int64)
        accepted = np.array(
            [r[2] for r in first if r[0] == prefix and r[2] is not None], dtype=np.int64
        )
        reach[f"{kind}_first_message"] = np.sort(sent)
        reach[f"{kind}_first_accepted"] = np.sort(accepted)
    return reach


def read_router_count(
    db: sqlite3.Connection, rid: str, run: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    rows = db.execute(
        "SELECT created_step, retired_step FROM routers WHERE run_id=?", (rid,)
    ).fetchall()
    last = max(int(run["last_completed_step"]), -1)
    steps = np.arange(-1, last + 1)
    if not rows:
        return steps, np.zeros(len(steps), dtype=np.int64)
    created = np.array([r[0] for r in rows])
    retired = np.array([r[1] if r[1] is not None else 1 << 40 for r in rows])
    alive = (created[None, :] <= steps[:, None]) & (retired[None, :] > steps[:, None])
    return steps, alive.sum(axis=1)


def read_router_events(
    db: sqlite3.Connection, rid: str, present: set[str]
) -> list[tuple[int, str, str]]:
    """Splits and merges that were kept: from ``router_operations``, else router origins."""
    events: list[tuple[int, str, str]] = []
    if "router_operations" in present:
        for step, operation, before, after in db.execute(
            "SELECT step, operation, router_ids_json, result_ids_json FROM router_operations "
            "WHERE run_id=? AND status='kept' AND operation IN ('split', 'merge') ORDER BY step",
            (rid,),
        ):
            events.append(
                (
                    step,
                    operation,
                    f"{'+'.join(json.loads(before))} → {', '.join(json.loads(after))}",
                )
            )
    if not events:
        for step, router_id, origin in db.execute(
            "SELECT created_step, router_id, origin FROM routers WHERE run_id=? AND "
            "(origin LIKE 'split%' OR origin LIKE 'merge%') ORDER BY created_step",
            (rid,),
        ):
            events.append((step, origin.split(":")[0], f"{origin} → {router_id}"))
    return events


def read_router_lineage(db: sqlite3.Connection, rid: str) -> list[Lineage]:
    top = db.execute(
        "SELECT router_id, sum(reason != 'integrate') AS optimised, count(*) AS n "
        "FROM router_versions WHERE run_id=? "
        "GROUP BY router_id ORDER BY optimised DESC, n DESC, router_id LIMIT ?",
        (rid, TOP_CHANGED),
    ).fetchall()
    lineage = []
    for router_id, _, _ in top:
        versions = [
            dict(r)
            for r in db.execute(
                "SELECT step, version, reason, n_members, tau, text FROM router_versions "
                "WHERE run_id=? AND router_id=? ORDER BY id",
                (rid, router_id),
            )
        ]
        origin = db.execute(
            "SELECT origin FROM routers WHERE run_id=? AND router_id=?", (rid, router_id)
        ).fetchone()
        key = router_id if origin is None else f"{router_id} (origin {origin[0]})"
        lineage.append(Lineage(key, versions))
    return lineage


def read_rule_lineage(db: sqlite3.Connection, rid: str) -> list[Lineage]:
    top = db.execute(
        "SELECT agent_id, rule_id, count(*) AS n FROM filter_rule_versions WHERE run_id=? "
        "GROUP BY agent_id, rule_id ORDER BY n DESC, agent_id, rule_id LIMIT ?",
        (rid, TOP_CHANGED),
    ).fetchall()
    lineage = []
    for agent_id, rule_id, _ in top:
        versions = [
            dict(r)
            for r in db.execute(
                "SELECT step, version, reason, active, executable_json, text "
                "FROM filter_rule_versions WHERE run_id=? AND agent_id=? AND rule_id=? ORDER BY id",
                (rid, agent_id, rule_id),
            )
        ]
        lineage.append(Lineage(f"{agent_id} {rule_id}", versions))
    return lineage


def read_graph(db: sqlite3.Connection, rid: str) -> RouterGraph | None:
    """Memberships from the newest checkpoint (the trace's own pickled world; trusted like
    ``--resume`` trusts it), or None when the run has no checkpoint or it cannot be read."""
    from recnet.checkpoint import load

    row = db.execute(
        "SELECT step, format, state FROM checkpoints WHERE run_id=? ORDER BY step DESC LIMIT 1",
        (rid,),
    ).fetchone()
    if row is None:
        return None
    parts = db.execute(
        "SELECT data FROM checkpoint_parts WHERE run_id=? AND step=? ORDER BY part",
        (rid, row["step"]),
    ).fetchall()
    try:
        world = load(row["state"], row["format"], [p["data"] for p in parts]).world
    except Exception:  # an older or damaged checkpoint: the report goes on without the picture
        return None
    labels = {r: world.routers[r].profile_text()[:80] for r in world.routers}
    return RouterGraph(int(row["step"]), dict(world.memberships), labels)


def read_llm_operations(
    db: sqlite3.Connection, rid: str, scenario: dict[str, Any]
) -> list[dict[str, Any]]:
    """Calls, tokens, cost, latency, retries, repairs and fallbacks per LLM operation."""
    from recnet.llm.budget import DEFAULT_PRICES, find_price

    prices = {**DEFAULT_PRICES, **scenario.get("llm", {}).get("budget", {}).get("prices", {})}
    rows = db.execute(
        "SELECT operation, model, count(*) AS calls, sum(cache_hit) AS cache_hits, "
        "coalesce(sum(tokens_in), 0) AS tokens_in, coalesce(sum(tokens_out), 0) AS tokens_out, "
        "avg(CASE WHEN cache_hit THEN NULL ELSE latency_ms END) AS latency_ms, "
        "sum(attempts - 1) AS retries, sum(repairs) AS repairs, sum(fallback) AS fallbacks, "
        "sum(NOT parsed_ok) AS unparsed FROM llm_calls WHERE run_id=? "
        "GROUP BY operation, model ORDER BY calls DESC",
        (rid,),
    )
    found = []
    for row in rows:
        entry = dict(row)
        price = find_price(entry["model"] or "", prices)
        entry["cost"] = (
            None
            if price is None
            else (entry["tokens_in"] * price[0] + entry["tokens_out"] * price[1]) / 1e6
        )
        found.append(entry)
    return found


def read_llm_steps(db: sqlite3.Connection, rid: str) -> dict[str, np.ndarray] | None:
    rows = db.execute(
        "SELECT step, count(*), coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), "
        "coalesce(avg(latency_ms), 0), sum(attempts - 1), sum(repairs), sum(fallback) "
        "FROM llm_calls WHERE run_id=? GROUP BY step ORDER BY step",
        (rid,),
    ).fetchall()
    if not rows:
        return None
    table = np.array(rows, dtype=np.float64)
    names = ("step", "calls", "tokens_in", "tokens_out", "latency_ms", "retries", "repairs")
    series = {name: table[:, i] for i, name in enumerate(names)}
    series["fallbacks"] = table[:, 7]
    return series


def read_runs(
    paths: Sequence[Path | str], *, run_id: str | None = None, agent: str | None = None
) -> list[RunData]:
    """One ``RunData`` per trace (comparison mode), labelled by file name when they differ."""
    found = [read_run(p, run_id=run_id, agent=agent) for p in paths]
    names = [Path(p).stem for p in paths]
    unique = len(set(names)) == len(names)
    for i, data in enumerate(found):
        data.label = names[i] if unique else f"{chr(65 + i)}: {data.run['name']}"
    return found

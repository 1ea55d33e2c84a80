"""Reports on a trace: pure functions from a ``TraceStore`` to ``rich`` tables.

Pipeline position: the reading end of the trace store. ``recnet traces`` prints these tables;
tests and notebooks render them with ``render_text``. Every function taking ``run_id`` accepts
``None`` for "the latest run in the file" and raises TraceError naming what exists when asked for
a run, agent, step or split the trace does not hold.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from recnet.errors import TraceError
from recnet.trace.cells import (
    _few,
    _num,
    _opt,
    _short,
    _time,
    _yes,
    resolve_run,
)
from recnet.trace.cells import render_text as render_text
from recnet.trace.levels import level_note, profile_note, run_level, run_profile_level
from recnet.trace.lineage import lineage_table as lineage_table
from recnet.trace.store import Row, TraceStore

STATUS_ORDER = ("accepted", "rejected", "dropped", "buffered")
_RUN_STYLE = {"running": "yellow", "finished": "green", "failed": "red", "stopped": "magenta"}
_METRIC_FAMILIES = ("ndcg", "hr", "recall", "precision", "mrr")
_KINDS = {"u": "user", "i": "item", "r": "router"}


# -- runs -----------------------------------------------------------------------------------------


def runs_table(store: TraceStore) -> Table:
    """One row per run: id, name, seed, brain, status, last completed step, start and end."""
    table = Table(title="Runs")
    for header in ("run", "name", "seed", "brain", "status", "last step", "started", "finished"):
        justify = "right" if header in ("seed", "last step") else "left"
        table.add_column(header, justify=justify)
    runs = store.runs()
    for run in runs:
        status = str(run["status"])
        table.add_row(
            str(run["run_id"]),
            str(run["name"]),
            str(run["seed"]),
            str(run["brain"]),
            Text(status, style=_RUN_STYLE.get(status, "")),
            str(run["last_completed_step"]),
            _time(run["started_at"]),
            _time(run["finished_at"]),
        )
    table.caption = f"{len(runs)} run(s)" if runs else "no runs in this trace yet"
    return table


# -- one agent ------------------------------------------------------------------------------------


def _section(
    title: str, headers: Sequence[str], rows: list[list[str]], total: int, note: str = ""
) -> RenderableType:
    if total == 0:
        return Text(f"{title}: none" + (f" · {note}" if note else ""), style="dim")
    table = Table(title=title, title_justify="left", expand=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*row)
    parts = [f"showing {len(rows)} of {total}"] if total > len(rows) else []
    table.caption = " · ".join([*parts, note] if note else parts) or None
    return table


def agent_history_table(
    store: TraceStore, run_id: str | None, agent_id: str, limit: int = 100
) -> Table:
    """Everything one agent went through: profile and rule versions, messages, interactions.

    Each section shows at most ``limit`` rows (oldest first) and says how many there are.
    """
    run = resolve_run(store, run_id)
    rid = str(run["run_id"])
    agent_rows = store.read("agents", rid, agent_id=agent_id)
    kind = str(agent_rows[0]["kind"]) if agent_rows else _KINDS.get(agent_id.split(":")[0], "")
    sections: list[RenderableType] = []

    n = store.count("profile_versions", rid, agent_id=agent_id)
    rows = [
        [str(r["step"]), str(r["kind"]), str(r["reason"]), _short(r["text"])]
        for r in store.read("profile_versions", rid, limit=limit, agent_id=agent_id)
    ]
    note = profile_note(run_profile_level(run)) or ""
    sections.append(_section("Profile versions", ("step", "kind", "reason", "text"), rows, n, note))
    found = n

    n = store.count("filter_rule_versions", rid, agent_id=agent_id)
    rows = [
        [
            str(r["step"]),
            str(r["rule_id"]),
            str(r["version"]),
            str(r["position"]),
            _yes(r["active"]),
            str(r["reason"]),
            _short(r["text"], 80),
        ]
        for r in store.read("filter_rule_versions", rid, limit=limit, agent_id=agent_id)
    ]
    headers = ("step", "rule", "version", "position", "active", "reason", "text")
    sections.append(_section("Filter rule versions", headers, rows, n))
    found += n

    level = run_level(run)
    n = store.count("messages", rid, client_id=agent_id)
    rows = [
        [
            str(r["step"]),
            str(r["router_id"]),
            _num(r["score"]),
            str(r["status"]),
            _opt(r["rule_id"]),
            _opt(r["decided_step"]),
        ]
        for r in store.read("messages", rid, limit=limit, client_id=agent_id)
    ]
    headers = ("step", "router", "score", "status", "rule", "decided")
    sections.append(_section("Messages received", headers, rows, n, level_note(level)))
    found += n

    interactions, n = _interactions_of(store, rid, agent_id, kind, limit)
    rows = [
        [
            str(r["seq"]),
            str(r["step"]),
            str(r["user_id"]),
            str(r["item_id"]),
            str(r["negative_id"]),
            str(r["chosen_id"]),
            _yes(r["correct"]),
        ]
        for r in interactions
    ]
    headers = ("seq", "step", "user", "item", "negative", "chosen", "correct")
    sections.append(_section("Interactions", headers, rows, n))
    found += n

    if kind == "router" or store.count("router_versions", rid, router_id=agent_id):
        n = store.count("router_versions", rid, router_id=agent_id)
        rows = [
            [
                str(r["step"]),
                str(r["version"]),
                str(r["reason"]),
                _num(r["tau"]),
                str(r["n_members"]),
                _short(r["text"], 80),
            ]
            for r in store.read("router_versions", rid, limit=limit, router_id=agent_id)
        ]
        headers = ("step", "version", "reason", "tau", "members", "text")
        sent = store.count("messages", rid, router_id=agent_id)
        note = f"{sent} message(s) sent" + (f" ({level_note(level)})" if level != "all" else "")
        sections.append(_section("Router versions", headers, rows, n, note))
        found += n + sent

    if not agent_rows and found == 0:
        known = [r["agent_id"] for r in store.read("agents", rid, limit=6)]
        raise TraceError(
            f"no agent {agent_id!r} in run {rid!r}",
            f"agent ids look like u:<user>, i:<item>, r:<n>; some in this run: {_few(known)}",
        )

    label = (
        f" — {_short(agent_rows[0]['label'], 60)}" if agent_rows and agent_rows[0]["label"] else ""
    )
    outer = Table(
        title=f"Agent {agent_id} ({kind or 'unknown kind'}){label} · run {rid}",
        show_header=False,
        box=None,
        padding=(0, 0, 1, 0),
    )
    outer.add_column()
    for section in sections:
        outer.add_row(section)
    return outer


def _interactions_of(
    store: TraceStore, rid: str, agent_id: str, kind: str, limit: int
) -> tuple[list[Row], int]:
    if kind == "user" or (not kind and agent_id.startswith("u:")):
        n = store.count("interactions", rid, user_id=agent_id)
        return store.read("interactions", rid, limit=limit, user_id=agent_id), n
    if kind == "router":
        return [], 0
    # An item takes part as the item really chosen or as the sampled alternative.
    as_item = store.read("interactions", rid, limit=limit, item_id=agent_id)
    as_negative = store.read("interactions", rid, limit=limit, negative_id=agent_id)
    both = sorted(as_item + as_negative, key=lambda r: r["seq"])[:limit]
    n = store.count("interactions", rid, item_id=agent_id) + store.count(
        "interactions", rid, negative_id=agent_id
    )
    return both, n


# -- one step -------------------------------------------------------------------------------------


def step_messages_table(
    store: TraceStore, run_id: str | None, step: int, limit: int = 50
) -> Table | Group:
    """The messages routers sent at ``step`` (first ``limit``) and a count by status."""
    run = resolve_run(store, run_id)
    rid = str(run["run_id"])
    messages = store.read("messages", rid, step=step)
    if not messages and not store.count("steps", rid, step=step):
        steps = [r["step"] for r in store.read("steps", rid)]
        where = f"{min(steps)}–{max(steps)}" if steps else "none yet"
        raise TraceError(f"run {rid!r} has no step {step} in its trace", f"recorded steps: {where}")
    level = run_level(run)
    if level in ("none", "aggregate"):
        return message_counts_table(store, run, step, level)
    table = Table(title=f"Messages sent at step {step} · run {rid}")
    for header in ("id", "router", "client", "score", "status", "rule", "decided"):
        table.add_column(header, justify="right" if header in ("id", "score") else "left")
    for r in messages[: max(limit, 0)]:
        table.add_row(
            str(r["id"]),
            str(r["router_id"]),
            str(r["client_id"]),
            _num(r["score"]),
            str(r["status"]),
            _opt(r["rule_id"]),
            _opt(r["decided_step"]),
        )
    counts = Counter(str(r["status"]) for r in messages)
    order = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts) - set(STATUS_ORDER))
    summary = " · ".join(f"{status} {counts[status]}" for status in order)
    shown = f" (showing {min(limit, len(messages))})" if len(messages) > limit else ""
    table.caption = f"{len(messages)} message(s){shown}" + (f": {summary}" if summary else "")
    if level != "all":
        exact = store.read("message_counts", rid, step=step)
        decided = sum(int(r["n"]) for r in exact)
        note = f"{level_note(level)}; {decided} message fate(s) decided at step {step}"
        return Group(table, Text(note))
    return table


def message_counts_table(store: TraceStore, run: Row, step: int, level: str) -> Group:
    """A run without message rows: its per-router fate counts at ``step``, or a clear error."""
    rid = str(run["run_id"])
    if level == "none":
        raise TraceError(
            f"run {rid!r} recorded no router messages (trace.messages=none)",
            "re-run with --set trace.messages=all (or sampled / aggregate) to record them",
        )
    table = Table(title=f"Message fates decided at step {step} · run {rid}")
    for header in ("router", "status", "messages"):
        table.add_column(header, justify="right" if header == "messages" else "left")
    counts = store.read("message_counts", rid, step=step)
    for r in counts:
        table.add_row(str(r["router_id"]), str(r["status"]), str(r["n"]))
    total = sum(int(r["n"]) for r in counts)
    table.caption = f"{total} message(s)"
    return Group(table, Text(str(level_note(level))))


# -- metrics --------------------------------------------------------------------------------------


def _metric_key(name: str) -> tuple[int, int, str]:
    match = re.fullmatch(r"([a-z_]+)(?:@(\d+))?", name.lower())
    family, k = (match.group(1), int(match.group(2) or 0)) if match else (name, 0)
    rank = _METRIC_FAMILIES.index(family) if family in _METRIC_FAMILIES else len(_METRIC_FAMILIES)
    return rank, k, name


def metrics_table(
    store: TraceStore, run_id: str | None, step: int | None = None, split: str | None = None
) -> Table:
    """Models as rows, metrics as columns, best value per column in bold.

    ``step`` defaults to the last step with metrics; ``split`` to ``test`` when it exists.
    """
    run = resolve_run(store, run_id)
    rid = str(run["run_id"])
    rows = store.read("metrics", rid)
    if not rows:
        raise TraceError(
            f"run {rid!r} has no metrics yet", "metrics are written at each evaluation step"
        )
    splits = sorted({str(r["split"]) for r in rows})
    if split is None:
        split = "test" if "test" in splits else splits[0]
    elif split not in splits:
        raise TraceError(f"run {rid!r} has no {split!r} metrics", f"splits: {_few(splits)}")
    rows = [r for r in rows if r["split"] == split]
    steps = sorted({int(r["step"]) for r in rows})
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise TraceError(
            f"run {rid!r} has no {split} metrics at step {step}",
            f"steps with metrics: {_few(steps, 10)}",
        )
    rows = [r for r in rows if r["step"] == step]
    values: dict[tuple[str, str], float] = {
        (str(r["model"]), str(r["metric"])): float(r["value"]) for r in rows
    }
    models = sorted({m for m, _ in values}, key=lambda m: (m != "recnet", m))
    names = sorted({k for _, k in values}, key=_metric_key)
    best = {name: max(v for (_, k), v in values.items() if k == name) for name in names}
    table = Table(title=f"Metrics · run {rid} · step {step} · {split}")
    table.add_column("model")
    for name in names:
        table.add_column(name, justify="right")
    for model in models:
        cells: list[RenderableType] = [model]
        for name in names:
            value = values.get((model, name))
            if value is None:
                cells.append("–")
            else:
                cells.append(Text(f"{value:.4f}", style="bold" if value == best[name] else ""))
        table.add_row(*cells)
    table.caption = "best per column in bold"
    flagged = sorted({(str(r["model"]), str(r["flag"])) for r in rows if r.get("flag")})
    if flagged:  # values that are not the model's own: say so under the table
        marks = "; ".join(f"{model}: {flag}" for model, flag in flagged)
        table.caption = f"best per column in bold · NOT the model's own answers · {marks}"
    return table


# -- LLM calls ------------------------------------------------------------------------------------


def llm_calls_table(store: TraceStore, run_id: str | None, limit: int = 50) -> Table:
    """The run's first ``limit`` LLM calls: operation, agent, model, tokens, latency, outcome."""
    run = resolve_run(store, run_id)
    rid = str(run["run_id"])
    total = store.count("llm_calls", rid)
    table = Table(title=f"LLM calls · run {rid}")
    headers = ("id", "step", "operation", "agent", "model", "tokens in/out", "latency ms")
    for header in (*headers, "cache", "attempts", "error"):
        right = header in ("id", "step", "tokens in/out", "latency ms", "attempts")
        table.add_column(header, justify="right" if right else "left", overflow="fold")
    for r in store.read("llm_calls", rid, limit=max(limit, 0)):
        tokens = f"{_opt(r['tokens_in']) or '?'}/{_opt(r['tokens_out']) or '?'}"
        table.add_row(
            str(r["id"]),
            str(r["step"]),
            str(r["operation"]),
            _opt(r["agent_id"]),
            _opt(r["model"]),
            tokens,
            _num(r["latency_ms"], 0),
            "hit" if r["cache_hit"] else "miss",
            str(r["attempts"]),
            Text(_short(r["error"], 60), style="red") if r["error"] else "",
        )
    if total == 0:
        table.caption = "no LLM calls in this run (the offline brain makes none)"
    else:
        table.caption = f"showing {min(limit, total)} of {total} call(s)"
    return table

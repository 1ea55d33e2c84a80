"""Lineage reports: the version chain of a filter rule or a router and the gradients behind it.

Pipeline position: the reading end of the trace store (``recnet traces lineage``), beside
``recnet.trace.report``.
"""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from recnet.errors import TraceError
from recnet.trace.cells import _few, _num, _opt, _short, _yes, resolve_run
from recnet.trace.store import TraceStore

# -- lineage (backward phase) ---------------------------------------------------------------------


def _gradient_cell(store: TraceStore, rid: str, gradient_id: Any, cache: dict[int, str]) -> str:
    """``#12 negative router r:3: <reason>`` for a gradient id ('' when None)."""
    if gradient_id is None:
        return ""
    gid = int(gradient_id)
    if gid not in cache:
        rows = store.read("gradients", rid, gradient_id=gid)
        if rows:
            g = rows[0]
            cache[gid] = (
                f"#{gid} {g['judgement']} {g['module']} {g['target_id']} "
                f"(step {g['step']}, {g['user_id']}): {_short(g['reason'], 90)}"
            )
        else:
            cache[gid] = f"#{gid}"
    return cache[gid]


def lineage_table(
    store: TraceStore,
    run_id: str | None,
    target: str,
    agent: str | None = None,
    limit: int = 200,
) -> Table:
    """The version chain of a filter rule or a router, each version with its parent version and
    the gradient that caused it.

    ``target`` is a router id (``r:<n>``) or a rule id (``rule-min_relevance``, ...). For a rule,
    ``agent`` narrows the chain to the shared default memory (``*``) and that agent's own copy;
    without it every agent's versions are listed.
    """
    run = resolve_run(store, run_id)
    rid = str(run["run_id"])
    if target.startswith("r:"):
        return _router_lineage(store, rid, target, limit)
    return _rule_lineage(store, rid, target, agent, limit)


def _rule_lineage(
    store: TraceStore, rid: str, rule_id: str, agent: str | None, limit: int
) -> Table:
    rows = store.read("filter_rule_versions", rid, rule_id=rule_id)
    if not rows:
        known = sorted({str(r["rule_id"]) for r in store.read("filter_rule_versions", rid)})
        raise TraceError(
            f"no filter rule {rule_id!r} in run {rid!r}",
            f"rule ids in this run: {_few(known, 8)}; routers are r:<n>",
        )
    if agent is not None:
        rows = [r for r in rows if r["agent_id"] in ("*", agent)]
        if not any(r["agent_id"] == agent for r in rows):
            owners = sorted(
                {
                    str(r["agent_id"])
                    for r in store.read("filter_rule_versions", rid, rule_id=rule_id)
                    if r["agent_id"] != "*"
                }
            )
            raise TraceError(
                f"agent {agent!r} has no own version of {rule_id!r} in run {rid!r} "
                "(it uses the default memory's)",
                f"agents with their own versions: {_few(owners)}",
            )
    rows.sort(key=lambda r: (r["agent_id"] != "*", str(r["agent_id"]), r["step"], r["id"]))
    cache: dict[int, str] = {}
    table = Table(title=f"Lineage of filter rule {rule_id} · run {rid}")
    headers = ("agent", "step", "version", "parent", "pos", "active", "reason", "text", "gradient")
    for header in headers:
        right = header in ("step", "version", "parent", "pos")
        table.add_column(header, justify="right" if right else "left", overflow="fold")
    for r in rows[:limit]:
        table.add_row(
            str(r["agent_id"]),
            str(r["step"]),
            str(r["version"]),
            _opt(r["parent_version"]),
            str(r["position"]),
            _yes(r["active"]),
            str(r["reason"]),
            _short(r["text"], 70),
            _gradient_cell(store, rid, r["gradient_id"], cache),
        )
    agents = len({r["agent_id"] for r in rows if r["agent_id"] != "*"})
    shown = f"showing {min(limit, len(rows))} of {len(rows)} version(s)"
    table.caption = f"{shown} · {agents} agent(s) with their own copy"
    return table


def _router_lineage(store: TraceStore, rid: str, router_id: str, limit: int) -> Table:
    versions = store.read("router_versions", rid, router_id=router_id)
    origin = store.read("routers", rid, router_id=router_id)
    if not versions and not origin:
        known = [r["router_id"] for r in store.read("routers", rid)]
        raise TraceError(
            f"no router {router_id!r} in run {rid!r}", f"routers in this run: {_few(known, 8)}"
        )
    operations = [
        op
        for op in store.read("router_operations", rid)
        if router_id in json.loads(op["router_ids_json"])
        or router_id in json.loads(op["result_ids_json"])
    ]
    cache: dict[int, str] = {}
    table = Table(title=f"Lineage of router {router_id} · run {rid}")
    for header in ("step", "version", "parent", "reason", "tau", "members", "text", "gradient"):
        right = header in ("step", "version", "parent", "tau", "members")
        table.add_column(header, justify="right" if right else "left", overflow="fold")
    # integrate versions are many; show the structural ones and those the backward phase caused
    wanted = [v for v in versions if v["reason"] != "integrate"]
    for v in wanted[:limit]:
        table.add_row(
            str(v["step"]),
            str(v["version"]),
            _opt(v["parent_version"]),
            str(v["reason"]),
            _num(v["tau"]),
            str(v["n_members"]),
            _short(v["text"], 60),
            _gradient_cell(store, rid, v["gradient_id"], cache),
        )
    parts = []
    if origin:
        parts.append(f"origin {origin[0]['origin']} at step {origin[0]['created_step']}")
    integrate = len(versions) - len(wanted)
    if integrate:
        parts.append(f"{integrate} integrate version(s) not shown")
    for op in operations:
        before = ", ".join(json.loads(op["router_ids_json"]))
        after = ", ".join(json.loads(op["result_ids_json"]))
        parts.append(
            f"step {op['step']}: {op['operation']} {before} → {after} ({op['status']}"
            + (f", gradient #{op['gradient_id']}" if op["gradient_id"] is not None else "")
            + ")"
        )
    table.caption = " · ".join(parts) or None
    return table

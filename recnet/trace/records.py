"""Typed record builders: one function per kind of trace row, shared by the runner and the phases.

Pipeline position: between the phases and the trace store (``recnet.trace.store``). Every row of
the agent, profile, router, rule, message and backward tables is built here, from the domain
objects it describes, so a table's shape is written once. ``message_row`` returns a tuple in the
table's insert order (the hottest row: one per delivered message); the others return dicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from recnet.trace.levels import MessageTrace
from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.buffer import RouterMessage
from recnet.world.rules import FilterMemory, FilterRule

if TYPE_CHECKING:
    from recnet.critic.base import Gradient
    from recnet.world.world import World

Row = dict[str, object]
MessageRow = tuple[str, int, str, str, float, str, str | None, int | None]


def rounded(weights: Mapping[str, float]) -> dict[str, float]:
    """Attribute weights as traced: five decimals."""
    return {a: round(w, 5) for a, w in weights.items()}


def agent_row(run_id: str, agent_id: str, kind: str, label: str | None, created_step: int) -> Row:
    return {
        "run_id": run_id,
        "agent_id": agent_id,
        "kind": kind,
        "label": label,
        "created_step": created_step,
    }


def router_row(run_id: str, router: RouterAgent, created_step: int) -> Row:
    """A ``routers`` row; ``retired_step`` is filled later by ``retired_router_row``."""
    return {
        "run_id": run_id,
        "router_id": router.router_id,
        "created_step": created_step,
        "retired_step": None,
        "origin": router.origin,
    }


def message_row(
    run_id: str, message: RouterMessage, status: str, rule_id: str | None, decided_step: int
) -> MessageRow:
    """A ``messages`` row as a tuple in the table's insert order."""
    return (
        run_id,
        message.step,
        message.router_id,
        message.client_id,
        round(message.score, 6),
        status,
        rule_id,
        decided_step if status != "buffered" else None,
    )


def buffered_rows(
    run_id: str, clients: Iterable[ClientAgent], levels: MessageTrace, step: int
) -> list[Row]:
    """What the clients' buffers still hold when the run ends: counted per router in ``levels``
    (as ``buffered``), and the ``messages`` rows the level keeps. Client by client: a
    million-agent world ends with ~15 M buffered messages, which are never built all at once."""
    rows: list[Row] = []
    for client in clients:
        buffer = client.buffer
        if not len(buffer):
            continue
        if levels.counting:
            levels.count_all((router_id, "buffered") for router_id in buffer.router_ids())
        if levels.rows_wanted:
            rows += [
                message_row(run_id, m, "buffered", None, step)
                for m in buffer.peek()
                if levels.keep(m.message_id)
            ]
    return rows


def profile_row(run_id: str, agent: ClientAgent, step: int, kind: str, reason: str) -> Row:
    """A ``profile_versions`` row of the ``original`` or ``propagated`` profile."""
    weights = agent.original if kind == "original" else agent.propagated
    text = agent.profile_text() if kind == "original" else agent.propagated_profile_text()
    return {
        "run_id": run_id,
        "agent_id": agent.agent_id,
        "step": step,
        "kind": kind,
        "text": text,
        "attributes_json": json.dumps(rounded(weights)),
        "reason": reason,
    }


def router_version_row(
    run_id: str,
    step: int,
    router: RouterAgent,
    world: World,
    reason: str,
    parent_version: int | None = None,
    gradient_id: int | None = None,
) -> Row:
    return {
        "run_id": run_id,
        "router_id": router.router_id,
        "step": step,
        "version": router.version,
        "parent_version": router.version - 1 if parent_version is None else parent_version,
        "text": router.profile_text(),
        "attributes_json": json.dumps(rounded(router.profile)),
        "tau": router.tau,
        "n_members": world.member_count(router.router_id),
        "reason": reason,
        "gradient_id": gradient_id,
    }


def rule_row(
    run_id: str,
    agent_id: str,
    rule: FilterRule,
    step: int,
    position: int,
    *,
    parent_version: int | None,
    active: bool,
    reason: str,
    gradient_id: int | None = None,
) -> Row:
    """A ``filter_rule_versions`` row."""
    return {
        "run_id": run_id,
        "agent_id": agent_id,
        "rule_id": rule.rule_id,
        "step": step,
        "version": rule.version,
        "parent_version": parent_version,
        "position": position,
        "text": rule.text,
        "executable_json": json.dumps(rule.executable()),
        "active": active,
        "reason": reason,
        "gradient_id": gradient_id,
    }


def rule_version_rows(
    run_id: str,
    agent_id: str,
    step: int,
    old: FilterMemory,
    new: FilterMemory,
    gradient_id: int | None,
) -> list[Row]:
    """Rows for rules whose version or position changed, and for deleted rules."""
    before = {r.rule_id: (k, r) for k, r in enumerate(old.rules)}
    changed: list[tuple[FilterRule, int, int | None, bool]] = []  # rule, position, parent, active
    for position, rule in enumerate(new.rules):
        previous = before.get(rule.rule_id)
        if previous is not None and previous[1].version == rule.version and previous[0] == position:
            continue
        changed.append((rule, position, previous[1].version if previous else None, True))
    kept = {r.rule_id for r in new.rules}
    changed += [(r, k, r.version, False) for rid, (k, r) in before.items() if rid not in kept]
    return [
        rule_row(
            run_id,
            agent_id,
            rule,
            step,
            position,
            parent_version=parent,
            active=active,
            reason="optimize",
            gradient_id=gradient_id,
        )
        for rule, position, parent, active in changed
    ]


def rules_json(memory: FilterMemory) -> list[dict[str, object]]:
    """A filter memory as an optimisation's before/after description."""
    return [
        {"rule_id": r.rule_id, "version": r.version, "text": r.text, "executable": r.executable()}
        for r in memory.rules
    ]


def router_json(world: World, router_id: str) -> dict[str, object]:
    """A router as an optimisation's before/after description."""
    router = world.routers[router_id]
    return {
        "router_id": router_id,
        "version": router.version,
        "tau": round(router.tau, 6),
        "n_members": len(world.members(router_id)),
        "profile": rounded(router.profile),
    }


def gradient_row(run_id: str, g: Gradient) -> Row:
    fb, j = g.feedback, g.judgement
    return {
        "run_id": run_id,
        "gradient_id": g.gradient_id,
        "step": fb.step,
        "seq": fb.seq,
        "user_id": fb.user_id,
        "true_item": fb.true_item,
        "chosen_item": fb.chosen,
        "rival_item": fb.rival,
        "reward": fb.reward,
        "rank": fb.rank,
        "module": j.module,
        "target_id": j.target_id,
        "judgement": j.judgement,
        "effect": None if j.effect is None else round(j.effect, 6),
        "reason": j.reason,
        "suggestion": j.suggestion,
    }


def validation_reason(
    kept: bool,
    before: float,
    after: float,
    epsilon: float,
    *,
    standard_errors: float | None = None,
    z: float = 0.0,
) -> str:
    """Why the backward phase's safeguard kept or rolled back a batch, in words.

    ``kept: valid NDCG@10 0.6100 -> 0.6300``; a kept fall says it was within epsilon (or, with
    ``backward.rollback_z``, within noise); a rollback names the fall and the epsilon it exceeded
    (and how many standard errors it was).
    """
    change = f"{before:.4f} -> {after:.4f}"
    tested = (
        f", {standard_errors:.2f} standard errors {'<=' if kept else '>'} z {z:g}"
        if standard_errors is not None
        else ""
    )
    if not kept:
        return f"rolled back: valid NDCG@10 fell {change} (> epsilon {epsilon:g}{tested})"
    if after < before:
        within = f"> epsilon {epsilon:g}{tested}" if tested else f"within epsilon {epsilon:g}"
        return f"kept: valid NDCG@10 fell {change} ({within})"
    return f"kept: valid NDCG@10 {change}"

"""Planned optimisations: a critic's edit turned into an apply step and its lineage rows.

Pipeline position: backward phase step 3, between the critic (``recnet.critic``) and the
safeguard (``recnet.phases.backward.safeguard``). A ``Planned`` holds what a module looked like,
a function that applies the edit (returning what it looks like after), and a function that writes
its version rows once the batch is kept or rolled back. Router changes go through ``World``'s
router operations (``recnet.world.router_ops``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from recnet.brain.llm_backward import assign_texts
from recnet.brain.optimizer import (
    FilterRewrite,
    OptimizerSettings,
    ProfileRewrite,
    RouterDecision,
    apply_rule_edits,
    net,
)
from recnet.context import RunContext
from recnet.critic.base import Gradient
from recnet.phases.version_cadence import profile_trace
from recnet.trace.records import (
    agent_row,
    profile_row,
    rounded,
    router_json,
    router_row,
    router_version_row,
    rule_version_rows,
    rules_json,
)
from recnet.world import router_ops
from recnet.world.agents import ClientAgent
from recnet.world.world import World


@dataclass
class Planned:
    """One module optimisation waiting for its batch's validation."""

    module: str
    target_id: str
    operation: str
    gradients: list[Gradient]
    before: dict[str, object]
    apply: Callable[[], dict[str, object]]  # applies it; returns the "after" description
    routers: tuple[str, ...] = ()  # routers it changes (as they are before)
    after: dict[str, object] = field(default_factory=dict)
    trace: Callable[[bool], None] | None = None  # writes its version rows once kept/rolled back
    optimization_id: int = 0


class Planner:
    """Builds ``Planned`` edits over one world; numbers router operations from
    ``next_operation``."""

    def __init__(
        self, ctx: RunContext, world: World, settings: OptimizerSettings, next_operation: int
    ) -> None:
        self.ctx, self.world, self.settings = ctx, world, settings
        self.next_operation = next_operation
        self.profile_trace = profile_trace(ctx, len(world.clients))

    def profile(
        self, agent: ClientAgent, rewrite: ProfileRewrite, gradients: list[Gradient], step: int
    ) -> Planned:
        before: dict[str, object] = {"propagated": rounded(agent.propagated)}

        def apply() -> dict[str, object]:
            agent.propagated = dict(rewrite.weights)
            if rewrite.text is not None:
                agent.propagated_text = rewrite.text
            return {"propagated": rounded(agent.propagated), "dampened": list(rewrite.dampened)}

        def trace(kept: bool) -> None:
            if kept and self.profile_trace.keep(self.world.client_position[agent.agent_id]):
                row = profile_row(self.ctx.run_id, agent, step, "propagated", "optimize")
                self.ctx.store.add("profile_versions", [row])

        planned = Planned("propagated_profile", agent.agent_id, "rewrite", gradients, before, apply)
        planned.trace = trace
        return planned

    def filters(
        self, agent: ClientAgent, rewrite: FilterRewrite, gradients: list[Gradient], step: int
    ) -> Planned:
        old = agent.filters
        new = apply_rule_edits(old, rewrite.edits, owner=agent.agent_id)
        before: dict[str, object] = {"rules": rules_json(old), "reason": rewrite.reason}

        def apply() -> dict[str, object]:
            agent.filters = new
            edits = [
                {"op": e.op, "rule_id": e.rule_id, "params": dict(e.params)} for e in rewrite.edits
            ]
            return {"rules": rules_json(new), "edits": edits}

        def trace(kept: bool) -> None:
            if kept:
                gid = cause(gradients, self.settings.tolerance)
                rows = rule_version_rows(self.ctx.run_id, agent.agent_id, step, old, new, gid)
                self.ctx.store.add("filter_rule_versions", rows)

        planned = Planned("filter_memory", agent.agent_id, "rules", gradients, before, apply)
        planned.trace = trace
        return planned

    def router(self, decision: RouterDecision, gradients: list[Gradient], step: int) -> Planned:
        world = self.world
        ids = [decision.router_id] + ([decision.partner] if decision.partner else [])
        before: dict[str, object] = {r: router_json(world, r) for r in ids}
        before["reason"] = decision.reason
        result: list[router_ops.RouterChange] = []

        def apply() -> dict[str, object]:
            change = self._apply_router(decision, step)
            if change is None:
                return {"unchanged": True}
            result.append(change)
            return {r: router_json(world, r) for r in change.created}

        planned = Planned(
            "router", decision.router_id, decision.op, gradients, before, apply, tuple(ids)
        )

        def trace(kept: bool) -> None:
            if result:
                self._trace_router(planned, result[0], kept, step)

        planned.trace = trace
        return planned

    def _apply_router(self, decision: RouterDecision, step: int) -> router_ops.RouterChange | None:
        world, settings = self.world, self.settings
        size = settings.router_profile_size
        if decision.op == "split":
            number = int(decision.router_id.split(":")[1])
            rng = self.ctx.seeds.generator("backward-split", step, number)
            change = router_ops.split(
                world,
                decision.router_id,
                rng,
                step=step,
                profile_size=size,
                min_members=settings.min_members_split,
            )
            if change is not None and decision.parts:
                profiles = [world.routers[r].profile for r in change.created]
                texts = assign_texts(profiles, decision.parts)
                for r, text in zip(change.created, texts, strict=True):
                    world.routers[r].text = text
            return change
        if decision.op == "merge":
            assert decision.partner is not None
            return router_ops.merge(
                world, decision.router_id, decision.partner, step=step, profile_size=size
            )
        router = world.routers[decision.router_id]
        if decision.tau is not None:
            router.tau = decision.tau
        if decision.profile is not None:
            text = decision.text if decision.text is not None else router.text
            change = router_ops.rewrite(world, decision.router_id, decision.profile, text)
        else:
            change = router_ops.set_tau(world, decision.router_id, router.tau)
        if change is not None and decision.op == "rewrite_tau":
            change = router_ops.RouterChange("rewrite_tau", change.removed, change.created)
        return change

    def _trace_router(
        self, planned: Planned, change: router_ops.RouterChange, kept: bool, step: int
    ) -> None:
        ctx, world = self.ctx, self.world
        gid = cause(planned.gradients, self.settings.tolerance)
        row = {
            "run_id": ctx.run_id,
            "operation_id": self.next_operation,
            "step": step,
            "optimization_id": planned.optimization_id,
            "operation": change.operation,
            "router_ids_json": json.dumps(list(change.removed)),
            "result_ids_json": json.dumps(list(change.created)),
            "before_json": json.dumps(planned.before),
            "after_json": json.dumps(planned.after),
            "gradient_id": gid,
            "status": "kept" if kept else "rolled_back",
        }
        ctx.store.add("router_operations", [row])
        self.next_operation += 1
        if not kept:
            return
        created = [world.routers[r] for r in change.created]
        if change.operation in ("split", "merge"):
            ctx.store.add(
                "agents",
                [agent_row(ctx.run_id, r.router_id, "router", r.label(), step) for r in created],
            )
            ctx.store.add("routers", [router_row(ctx.run_id, r, step) for r in created])
            ctx.store.retire_routers(ctx.run_id, change.removed, step)
            rows = [
                router_version_row(
                    ctx.run_id, step, r, world, change.operation, None, gradient_id=gid
                )
                for r in created
            ]
        else:
            rows = [
                router_version_row(ctx.run_id, step, r, world, "optimize", gradient_id=gid)
                for r in created
            ]
        ctx.store.add("router_versions", rows)


def cause(gradients: Sequence[Gradient], tolerance: float) -> int | None:
    """The gradient that caused an optimisation: the strongest one agreeing with the verdict."""
    if not gradients:
        return None
    verdict, _ = net([g.judgement for g in gradients], tolerance)
    agreeing = [g for g in gradients if g.judgement.judgement == verdict] or list(gradients)
    return max(agreeing, key=lambda g: (abs(g.judgement.effect or 0.0), -g.gradient_id)).gradient_id

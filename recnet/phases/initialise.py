"""Initialisation: extract item profiles, build the world and write its initial state.

Pipeline position: after ``recnet.prepare`` and before the phase loop. The initial agents,
profiles, routers, router versions, the default filter memory and the candidate lists become
trace rows (built by ``recnet.trace.records``), and a checkpoint at step -1 makes even a run
killed during its first step resumable.
"""

from __future__ import annotations

from recnet.checkpoint import add_checkpoint
from recnet.context import RunContext
from recnet.phases.evaluate import candidate_rows
from recnet.phases.forward import ForwardPhase
from recnet.phases.version_cadence import profile_trace
from recnet.prepare import Prepared
from recnet.trace.records import (
    agent_row,
    profile_row,
    router_row,
    router_version_row,
    rule_row,
)
from recnet.world.build import build_world, history_profiles
from recnet.world.embedding import Embedder
from recnet.world.policies import acts_until
from recnet.world.world import World


async def initialise_world(ctx: RunContext, prepared: Prepared, embedder: Embedder) -> World:
    """Extract item profiles, build the world and write its initial state to the trace."""
    scenario, dataset = ctx.scenario, prepared.dataset
    items = await ctx.brain.extract_items(list(dataset.items.values()))
    item_profiles = {key: update.weights for key, update in items.items()}
    item_texts = {key: update.text for key, update in items.items() if update.text is not None}
    user_profiles = {}
    if scenario.world.user_init == "history" and scenario.world.user_init_items > 0:
        user_profiles = history_profiles(
            prepared.split.train, item_profiles, scenario.world.user_init_items
        )
    world = build_world(
        dataset,
        scenario,
        embedder,
        item_profiles,
        user_profiles,
        ctx.seeds.generator("routers-init"),
        item_texts=item_texts,
    )
    world.acts_until = acts_until(
        world, prepared.split.train, (prepared.test_candidates, prepared.valid_candidates)
    )
    write_initial_state(ctx, world, prepared)
    return world


def write_initial_state(ctx: RunContext, world: World, prepared: Prepared) -> None:
    store, run_id = ctx.store, ctx.run_id
    store.add(
        "agents",
        [agent_row(run_id, a.agent_id, a.kind, a.label, -1) for a in world.clients]
        + [agent_row(run_id, r.router_id, "router", r.label(), -1) for r in world.routers.values()],
    )
    kept = profile_trace(ctx, len(world.clients))
    if kept.recorded:
        store.add(
            "profile_versions",
            [
                profile_row(run_id, a, -1, "original", "init")
                for position, a in enumerate(world.clients)
                if kept.keep(position)
            ],
        )
    store.add("routers", [router_row(run_id, r, -1) for r in world.routers.values()])
    store.add(
        "router_versions",
        [
            router_version_row(run_id, -1, r, world, "init", parent_version=None)
            for r in world.routers.values()
        ],
    )
    store.add(
        "filter_rule_versions",
        [
            rule_row(
                run_id,
                world.default_filters.owner,
                rule,
                -1,
                position,
                parent_version=None,
                active=True,
                reason="init",
            )
            for position, rule in enumerate(world.default_filters.rules)
        ],
    )
    for split, candidates in (
        ("test", prepared.test_candidates),
        ("valid", prepared.valid_candidates),
    ):
        store.add("candidate_lists", candidate_rows(run_id, split, candidates, prepared.split))
    add_checkpoint(ctx, world, -1, {"brain": ctx.brain, "forward": ForwardPhase(ctx, world)})
    store.commit_step(run_id, -1)

"""Which profile and router versions a step's commit writes to the trace, and on which cadence.

Pipeline position: built by the runner (``recnet.runner.build_loop``) once the world exists and
called by its step commit with the forward phase, whose ``dirty_profiles`` and ``dirty_routers``
say which clients and routers changed since their versions were last written. The cadences are
``trace.profile_every`` and ``trace.router_every`` as resolved for the world's size
(``recnet.trace.levels``); the last step always writes. Which clients' versions are written at all
is ``trace.profiles`` (``ProfileTrace``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recnet.trace.levels import ProfileTrace, resolve_profile_every, resolve_router_every
from recnet.trace.records import profile_row, router_version_row

if TYPE_CHECKING:
    from recnet.context import RunContext
    from recnet.phases.forward import ForwardPhase
    from recnet.trace.store import TraceStore

Row = dict[str, object]


@dataclass(frozen=True)
class VersionCadence:
    """When changed profiles and routers' integrate versions are written."""

    profiles: ProfileTrace
    profile_every: int
    router_every: int  # 1: integrate versions are written by the forward phase itself
    n_steps: int

    @classmethod
    def resolve(cls, ctx: RunContext, n_clients: int, n_steps: int) -> VersionCadence:
        trace = ctx.scenario.trace
        every = resolve_profile_every(trace.profile_every, n_clients, n_steps)
        return cls(
            profiles=profile_trace(ctx, n_clients),
            profile_every=every,
            router_every=resolve_router_every(trace.router_every, n_clients, every),
            n_steps=n_steps,
        )

    def bind(self, forward: ForwardPhase) -> None:
        """Make the forward phase hold routers' integrate versions for the cadence (call before
        a checkpoint restores the ones still waiting), and state the message and profile trace
        levels in force in the run's row."""
        if self.router_every > 1:
            forward.dirty_routers = {}
        forward.ctx.store.update_run(
            forward.ctx.run_id,
            trace_messages=forward.message_trace.describe(),
            trace_profiles=self.profiles.describe(),
        )

    def write_due(self, forward: ForwardPhase, step: int, store: TraceStore) -> None:
        """Add the version rows ``step``'s commit writes (and forget them as written). Profile
        rows are made and added ``PROFILE_ROWS_PER_ADD`` at a time: the last step of a 1M-agent
        run writes every client changed since the previous write, and one list of them all (JSON
        and text per profile) took 4 GB."""
        last = step == self.n_steps - 1
        if self.profiles.recorded and (last or (step + 1) % self.profile_every == 0):
            for rows in profile_rows(forward, step, self.profiles):
                store.add("profile_versions", rows)
        if forward.dirty_routers is not None and (last or (step + 1) % self.router_every == 0):
            store.add("router_versions", router_rows(forward, step))


def profile_trace(ctx: RunContext, n_clients: int) -> ProfileTrace:
    """Which clients' profile versions the run writes (``trace.profiles`` for its world)."""
    trace = ctx.scenario.trace
    return ProfileTrace.for_world(trace.profiles, trace.profile_share, ctx.scenario.seed, n_clients)


#: Profile version rows made before they are handed to the trace store (which writes every
#: ``trace.batch_size`` rows).
PROFILE_ROWS_PER_ADD = 10_000


def profile_rows(forward: ForwardPhase, step: int, kept: ProfileTrace) -> Iterator[list[Row]]:
    """Profile versions of the clients changed since the last call that ``kept`` keeps, in chunks
    of rows (the changed clients are forgotten at once: the chunks are made from this call's list
    of them)."""
    world, run_id = forward.world, forward.ctx.run_id
    positions = world.client_position
    changed = sorted(p for p in map(positions.__getitem__, forward.dirty_profiles) if kept.keep(p))
    forward.dirty_profiles.clear()
    rows: list[Row] = []
    for position in changed:
        agent = world.clients[position]
        rows.append(profile_row(run_id, agent, step, "original", "interact"))
        if agent.propagated:
            rows.append(profile_row(run_id, agent, step, "propagated", "merge"))
        if len(rows) >= PROFILE_ROWS_PER_ADD:
            yield rows
            rows = []
    if rows:
        yield rows


def router_rows(forward: ForwardPhase, step: int) -> list[Row]:
    """The newest integrate version of each router changed since the last call. Skipped: retired
    routers, and routers whose version has moved on since (a split, merge or backward edit wrote
    its own row)."""
    waiting = forward.dirty_routers
    if not waiting:
        return []
    routers = forward.world.routers
    changed = sorted(
        (r for r, version in waiting.items() if r in routers and routers[r].version == version),
        key=lambda r: int(r.split(":")[1]),
    )
    waiting.clear()
    return [
        router_version_row(forward.ctx.run_id, step, routers[r], forward.world, "integrate")
        for r in changed
    ]

"""Which profile and router versions a step's commit writes to the trace, and on which cadence.

Pipeline position: built by the runner (``recnet.runner.build_loop``) once the world exists and
called by its step commit with the forward phase, whose ``dirty_profiles`` and ``dirty_routers``
say which clients and routers changed since their versions were last written. The cadences are
``trace.profile_every`` and ``trace.router_every`` as resolved for the world's size
(``recnet.trace.levels``); the last step always writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from recnet.config.trace_settings import TraceSettings
from recnet.trace.levels import resolve_profile_every, resolve_router_every
from recnet.trace.records import profile_row, router_version_row

if TYPE_CHECKING:
    from recnet.phases.forward import ForwardPhase

Row = dict[str, object]


@dataclass(frozen=True)
class VersionCadence:
    """When changed profiles and routers' integrate versions are written."""

    profiles: bool  # trace.profiles == "changed"
    profile_every: int
    router_every: int  # 1: integrate versions are written by the forward phase itself
    n_steps: int

    @classmethod
    def resolve(cls, trace: TraceSettings, n_clients: int, n_steps: int) -> VersionCadence:
        every = resolve_profile_every(trace.profile_every, n_clients, n_steps)
        return cls(
            profiles=trace.profiles == "changed",
            profile_every=every,
            router_every=resolve_router_every(trace.router_every, n_clients, every),
            n_steps=n_steps,
        )

    def bind(self, forward: ForwardPhase) -> None:
        """Make the forward phase hold routers' integrate versions for the cadence (call before
        a checkpoint restores the ones still waiting)."""
        if self.router_every > 1:
            forward.dirty_routers = {}

    def due(self, forward: ForwardPhase, step: int) -> dict[str, list[Row]]:
        """Table → the version rows ``step``'s commit writes (and forgets as written)."""
        last = step == self.n_steps - 1
        out: dict[str, list[Row]] = {}
        if self.profiles and (last or (step + 1) % self.profile_every == 0):
            out["profile_versions"] = profile_rows(forward, step)
        if forward.dirty_routers is not None and (last or (step + 1) % self.router_every == 0):
            out["router_versions"] = router_rows(forward, step)
        return out


def profile_rows(forward: ForwardPhase, step: int) -> list[Row]:
    """Profile versions of every client changed since the last call (then forgets them)."""
    rows: list[Row] = []
    world, run_id = forward.world, forward.ctx.run_id
    for agent_id in sorted(forward.dirty_profiles, key=world.client_position.__getitem__):
        agent = world.client(agent_id)
        rows.append(profile_row(run_id, agent, step, "original", "interact"))
        if agent.propagated:
            rows.append(profile_row(run_id, agent, step, "propagated", "merge"))
    forward.dirty_profiles.clear()
    return rows


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

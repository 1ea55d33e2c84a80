"""Router trends: what each community has lately been moving toward, for its users to rank with.

Pipeline position: the forward phase advances the trends once per step, at its start (before the
step's prequential test and interactions), from the routers' profiles as the previous step left
them; whoever ranks items for a user (prequential evaluation, the final test, the backward phase's
feedback) asks for the user's trend and the offline score adds it to the user's effective profile
(``with_trend``). Held by the world (``World.trends``), so a checkpoint carries it.

A router's trend is the positive part of its profile minus its slow average (an exponential moving
average of its own profile, ``propagation.trend_rate`` per step), scaled to unit length: the
attributes its members took up lately. A router's profile is itself an average of what its members
changed, and so mixes the old taste of members who have not moved with the new taste of those who
have; the difference to its slow average keeps only the news. A user's trend is the unit sum of the
trends of the routers it belongs to (what members routing would multicast to it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from recnet.world.agents import RouterAgent
from recnet.world.profile import Weights, add_scaled, blend, norm, normalized, top

if TYPE_CHECKING:  # the world holds the trends
    from recnet.world.world import World


class RouterTrends:
    """Each router's slow average (its ``size`` strongest attributes) and its current trend."""

    def __init__(self, rate: float, size: int) -> None:
        self.rate = rate
        self.size = size
        self.slow: dict[str, Weights] = {}
        self.current: dict[str, Weights] = {}

    def advance(self, routers: Mapping[str, RouterAgent]) -> None:
        """One step: every router's trend against its slow average, then the average moves
        towards its profile. A router seen for the first time has no trend yet."""
        slow, current = self.slow, {}
        for router_id, router in routers.items():
            profile = router.profile
            previous = slow.get(router_id)
            if previous is None:
                slow[router_id] = dict(profile)
                continue
            gained = {}
            for attribute, weight in profile.items():
                gain = weight - previous.get(attribute, 0.0)
                if gain > 0.0:
                    gained[attribute] = gain
            if gained:
                current[router_id] = normalized(gained)
            slow[router_id] = top(blend(previous, profile, self.rate), self.size)
        for gone in slow.keys() - routers.keys():
            del slow[gone]
        self.current = current

    def of(self, router_ids: Iterable[str]) -> Weights:
        """The unit sum of these routers' trends (empty when none has one)."""
        total: dict[str, float] = {}
        for router_id in router_ids:
            for attribute, weight in self.current.get(router_id, {}).items():
                total[attribute] = total.get(attribute, 0.0) + weight
        return normalized(total)


def with_trend(profile: Mapping[str, float], trend: Mapping[str, float], share: float) -> Weights:
    """``profile`` plus ``share`` × its length along the unit ``trend`` (the profile itself when
    either is empty: a user with no profile yet has nothing to scale the trend by)."""
    length = norm(profile)
    if not trend or share == 0.0 or length == 0.0:
        return dict(profile)
    return add_scaled(profile, trend, share * length)


def advance_trends(world: World, share: float, rate: float, size: int) -> None:
    """The forward phase's call at the start of a step: with ``share`` > 0, give the world its
    trends (once; slow averages of ``size`` attributes) and advance them by one step; with 0,
    leave trends off."""
    if share <= 0.0:
        return
    if world.trends is None:
        world.trends = RouterTrends(rate, size)
    world.trends.advance(world.routers)

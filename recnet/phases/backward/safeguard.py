"""The backward phase's safeguard: snapshot, probe, validate, keep or roll back a batch of edits.

Pipeline position: backward phase step 3, after planning (``recnet.phases.backward.plans``).
Before a batch is applied the touched state is captured (``WorldSnapshot``); after it, validation
NDCG@10 on the validation candidates is recomputed and the batch is rolled back exactly when it
dropped by more than ``backward.epsilon`` (and, with ``backward.rollback_z``, by more than that
many standard errors of the paired per-user change: a fall that noise explains is kept). Filter
rules and routers act through future propagation, so validation *probes* it: the touched routers
multicast once and the touched clients re-merge their recent messages (nothing kept), before and
after the change, and the two probed states are compared. Validation scores with the offline
formula and probes with the offline merge whatever the brain and critic, so it costs no LLM calls
(a proxy for an LLM's own ranking).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from recnet.brain.base import MergeTask
from recnet.brain.credit import ContributionLog, OfflineScorer, ProfileIndex, Side, SparseProfile
from recnet.brain.offline import OfflineBrain
from recnet.context import RunContext
from recnet.eval.metrics import ndcg_gains, rank_of_true
from recnet.eval.protocol import CandidateSet, true_index
from recnet.phases.backward.plans import Planned
from recnet.phases.forward import ForwardPhase
from recnet.world.agents import ClientAgent, item_agent_id, user_agent_id
from recnet.world.buffer import RouterMessage
from recnet.world.profile import Weights
from recnet.world.snapshot import WorldSnapshot
from recnet.world.world import World

NDCG_K = 10


@dataclass(slots=True)
class Verdict:
    """The safeguard's decision on one batch, with the validation NDCG@10 it rests on."""

    kept: bool
    valid_before: float
    valid_after: float
    #: the fall in standard errors of the paired per-user change (only with ``rollback_z``)
    standard_errors: float | None = None


class Safeguard:
    """Validation NDCG@10 of a batch of edits, with probes and exact rollback."""

    def __init__(
        self,
        ctx: RunContext,
        world: World,
        forward: ForwardPhase,
        log: ContributionLog,
        valid: CandidateSet,
        valid_items: Mapping[str, str],
    ) -> None:
        scenario = ctx.scenario
        self.ctx, self.world, self.forward, self.log = ctx, world, forward, log
        self.epsilon = scenario.backward.epsilon
        self.rollback_z = scenario.backward.rollback_z
        self.scorer = OfflineScorer(
            scenario.interaction.propagated_weight, scenario.interaction.popularity_weight
        )
        self.merge = OfflineBrain(scenario).merge  # probes: the offline merge, never traced
        self.valid = valid  # user → candidates (validation lists)
        self.valid_items = valid_items  # user → the true validation item
        self._valid_ids = {u: [item_agent_id(i) for i in c] for u, c in valid.items()}
        self._index = ProfileIndex()
        # validation items as sparse vectors, with the profile maps they were built from
        self._item_forms: dict[str, tuple[Weights, Weights, tuple[float, ...], SparseProfile]] = {}
        self.item_users: dict[str, list[str]] = {}
        for user, items in valid.items():
            for item in items:
                self.item_users.setdefault(item_agent_id(item), []).append(user)
        self.base: dict[str, float] | None = None  # this round's validation gains per user

    def new_round(self) -> None:
        """The forward step changed profiles: recompute the base gains when next needed."""
        self.base = None

    async def apply(self, step: int, planned: list[Planned]) -> tuple[list[Planned], Verdict]:
        """Apply ``planned`` together; keep it unless validation NDCG drops by > epsilon (and,
        with ``backward.rollback_z``, by more than that many standard errors).

        Returns the edits that changed something and the verdict on them."""
        world = self.world
        clients = {p.target_id for p in planned if p.module != "router"}
        probed = {p.target_id for p in planned if p.module == "filter_memory"}
        if self.base is None:
            self.base = await self.gains(sorted(self.valid), {})
        base = self.base
        has_routers = any(p.module == "router" for p in planned)
        snapshot = WorldSnapshot.capture(world, clients, vectors=False, routers=has_routers)
        before_routers = {r for p in planned for r in p.routers}
        probe_before = await self.probe(step, before_routers, probed)
        before_profiles = {c: state.propagated for c, state in snapshot.clients.items()}
        before_profiles.update(probe_before)
        for p in planned:
            p.after = p.apply()
        planned = [p for p in planned if not p.after.get("unchanged")]  # e.g. a refused split
        if not planned:
            return [], Verdict(True, 0.0, 0.0)
        after_routers = {r for p in planned for r in p.after if r in world.routers}
        probe_after = await self.probe(step, after_routers, probed)
        users = self.affected(set(before_profiles) | set(probe_after))
        before = await self.gains(users, before_profiles)
        after = await self.gains(users, probe_after)
        n = max(len(self.valid), 1)
        total = sum(base.values()) - sum(base[u] for u in users)
        valid_before = (total + sum(before.values())) / n
        valid_after = (total + sum(after.values())) / n
        verdict = Verdict(True, valid_before, valid_after)
        fall = valid_before - valid_after
        if fall > self.epsilon:
            verdict.kept = False
            if self.rollback_z > 0.0:
                error = paired_standard_error([after[u] - before[u] for u in users], n)
                verdict.standard_errors = fall / error if error else math.inf
                verdict.kept = verdict.standard_errors <= self.rollback_z
        if verdict.kept:
            rewritten = self.affected(p.target_id for p in planned if p.module != "router")
            base.update(await self.gains(rewritten, {}))
        else:
            snapshot.restore(world, reuse_router_ids=False)  # rolled-back ids are never reused
        return planned, verdict

    def affected(self, clients: Iterable[str]) -> list[str]:
        """Validation users whose ranking depends on any of ``clients``' profiles."""
        users: set[str] = set()
        for agent_id in clients:
            if agent_id in self.world.users:
                key = self.world.users[agent_id].key
                if key in self.valid:
                    users.add(key)
            else:
                users.update(self.item_users.get(agent_id, ()))
        return sorted(users)

    async def probe(
        self, step: int, routers: Iterable[str], clients: Iterable[str]
    ) -> dict[str, Weights]:
        """Propagated profiles after one hypothetical propagation: ``routers`` multicast once
        and ``clients`` re-merge their recent messages. Nothing in the world changes."""
        world, forward = self.world, self.forward
        inbox: dict[str, list[RouterMessage]] = {}
        for router_id in sorted(set(routers) & set(world.routers), key=_number):
            router = world.routers[router_id]
            scores = world.client_vectors @ world.space.embed_weights(router.profile)
            positions, chosen = forward.routing(
                world, router_id, scores, router.tau, forward.settings
            )
            snapshot = dict(router.profile)
            for position, score in zip(positions.tolist(), chosen.tolist(), strict=True):
                client = world.clients[position]
                inbox.setdefault(client.agent_id, []).append(
                    RouterMessage(0, router_id, client.agent_id, step, score, snapshot, "")
                )
        for client_id in clients:
            recent = [e.message for e in self.log.received(client_id).values()]
            if recent:
                inbox.setdefault(client_id, []).extend(recent)
        if not inbox:
            return {}
        ids = sorted(inbox, key=world.client_position.__getitem__)
        tasks = [MergeTask(world.client(c), inbox[c], step) for c in ids]
        outcomes = await self.merge(tasks)
        return {
            c: (o.propagated.weights if o.propagated is not None else world.client(c).propagated)
            for c, o in zip(ids, outcomes, strict=True)
        }

    async def gains(self, users: list[str], propagated: Mapping[str, Weights]) -> dict[str, float]:
        """NDCG@10 gains of ``users``' validation lists with ``propagated`` swapped in.

        Scored with ``OfflineScorer.score_lists`` (the offline brain's formula, vectorised, each
        effective profile built once) rather than ``brain.rank``.
        """
        if not users:
            return {}
        world, scorer, index = self.world, self.scorer, self._index

        def item_form(item_id: str) -> tuple[SparseProfile, float]:
            agent = world.items[item_id]
            prior = self.forward.popularity(agent)
            override = propagated.get(item_id)
            if override is not None:
                return index.sparse(scorer.effective(agent.original, override)), prior
            return self._cached_form(agent), prior

        def user_side(user: str) -> Side:
            agent = world.users[user_agent_id(user)]
            return Side(agent.original, propagated.get(agent.agent_id, agent.propagated))

        scores = scorer.score_lists(
            [user_side(u) for u in users], [self._valid_ids[u] for u in users], item_form, index
        )
        ranks = [
            rank_of_true(row, true_index(self.valid[u], self.valid_items[u]))
            for u, row in zip(users, scores, strict=True)
        ]
        return dict(zip(users, ndcg_gains(ranks, NDCG_K).tolist(), strict=True))

    def _cached_form(self, agent: ClientAgent) -> SparseProfile:
        """An item's effective profile as a sparse vector, rebuilt only when its profiles changed.

        Phases replace profile maps rather than edit them; the cache holds the very map objects
        it was built from and also compares their sizes and sums, so an in-place edit is caught.
        """
        original, propagated = agent.original, agent.propagated
        fingerprint = (
            len(original),
            len(propagated),
            sum(original.values()),
            sum(propagated.values()),
        )
        cached = self._item_forms.get(agent.agent_id)
        if (
            cached is not None
            and cached[0] is original
            and cached[1] is propagated
            and cached[2] == fingerprint
        ):
            return cached[3]
        form = self._index.sparse(self.scorer.effective(original, propagated))
        self._item_forms[agent.agent_id] = (original, propagated, fingerprint, form)
        return form


def _number(router_id: str) -> int:
    return int(router_id.split(":")[1])


def paired_standard_error(changes: list[float], n: int) -> float:
    """Standard error of the mean per-user change of validation NDCG@10, over ``n`` validation
    users of which only those in ``changes`` changed (the others changed by 0)."""
    if n < 2:
        return 0.0
    mean = sum(changes) / n
    variance = (sum(c * c for c in changes) - n * mean * mean) / (n - 1)
    return math.sqrt(max(variance, 0.0) / n)

"""The forward phase, one step = one batch of ``update_size`` chronological training interactions.

Pipeline position: run by the phase loop (``recnet.phases.loop``) once per step. Each method is one
of DESIGN §2's five steps; each builds tasks from the world, hands them to the brain in batches,
applies the outcomes, and writes trace rows:

1. ``interact``  — AgentCF interaction update (choose, reflect) per interaction, after the router
   trends advance (``recnet.world.trend``) and the prequential test ranks the step's true items.
2. ``perceive``  — attributes that changed go to routers (``recnet.phases.perception``).
3. ``integrate`` — routers that received attributes summarise them into a new profile.
4. ``multicast`` — each updated router sends its profile (or its change) to clients with
   cos ≥ τ or to its members; clients that cannot act are skipped.
5. ``receive``   — flushed buffers are merged into propagated profiles through filter memories;
   with ``world.buffer.enabled: false`` every message is merged on its own, in arrival order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from recnet.brain.base import (
    InteractionTask,
    MergeOutcome,
    MergeTask,
    ProfileUpdate,
    SummarizeTask,
)
from recnet.config.scenario import flush_triggers
from recnet.context import RunContext
from recnet.eval.prequential import PrequentialEvaluator, PrequentialSummary, summarize_prequential
from recnet.phases.rounds import conflict_free_rounds
from recnet.phases.step_state import ForwardState, StepState
from recnet.registry import PERCEPTION, ROUTING
from recnet.trace.levels import MessageTrace
from recnet.trace.records import message_row, router_version_row
from recnet.world.agents import ClientAgent, item_agent_id, user_agent_id
from recnet.world.buffer import Multicast, RouterMessage
from recnet.world.formulas import popularity_prior, popularity_priors
from recnet.world.policies import PerceptionPolicy, RoutingPolicy, excluded_mask
from recnet.world.profile import Weights, changes, normalized
from recnet.world.routing import select_recipients
from recnet.world.trend import advance_trends
from recnet.world.world import World

log = logging.getLogger(__name__)

OVERFLOW_RULE = "buffer-overflow"
#: Clients per brain merge call, rounded up to a multiple of ``llm.batch_size``: merging all clients
#: at once (the final flush) holds all their old and new profiles together, +170 MB at 100k agents.
MERGE_CHUNK = 8192


class ForwardPhase:
    """The five forward sub-phases over one world."""

    #: The sub-phases of one step, in order: each is a method taking the ``StepState``; the
    #: phase loop (``recnet.phases.loop``) makes one graph node of each.
    SUBPHASES = ("interact", "perceive", "integrate", "multicast", "receive")

    def __init__(self, ctx: RunContext, world: World) -> None:
        self.ctx = ctx
        self.world = world
        self.settings = ctx.scenario.propagation
        self.perception: PerceptionPolicy = PERCEPTION.get(self.settings.perception)
        self.routing: RoutingPolicy = ROUTING.get(self.settings.routing)
        for policy in (self.perception, self.routing):  # policies with run state bind to the run
            bind = getattr(policy, "bind", None)
            if callable(bind):
                bind(ctx, world)
        # when buffers flush: the scenario's list, or lazy merge by default with an LLM brain
        self.flush_on = flush_triggers(ctx.scenario, ctx.brain.kind)
        # a brain that fuses choose+merge gets a user's buffer inside its interaction task
        self.fuse_choice = bool(getattr(ctx.brain, "fuses_choose_merge", False))
        # False = no buffer: messages skip it and are merged one by one (see ``receive``)
        self.buffering = ctx.scenario.world.buffer.enabled
        batch = ctx.scenario.llm.batch_size
        self.merge_chunk = -(-MERGE_CHUNK // batch) * batch
        self.item_ids = list(world.items)
        self.max_count = 0
        self.dirty_profiles: set[str] = set()  # clients whose profile changed since last written
        #: router → its integrate version not written yet; None = written at once (every step)
        self.dirty_routers: dict[str, int] | None = None
        self.buffered: set[str] = set()  # clients with a non-empty buffer
        self.seq = 0  # position in the chronological training stream
        self.prequential = PrequentialEvaluator(ctx, self.item_ids, world.history)
        self.prequential_ranks: list[tuple[int, int]] = []  # (step, rank), test-then-train
        trace = ctx.scenario.trace
        self.message_trace = MessageTrace.for_world(
            trace.messages, trace.message_share, ctx.scenario.seed, len(world.clients)
        )

    def state(self) -> ForwardState:
        """Counters a checkpoint must carry to continue exactly (``Checkpointed``)."""
        return ForwardState(
            self.seq,
            self.max_count,
            set(self.dirty_profiles),
            set(self.buffered),
            list(self.prequential_ranks),
            dict(self.dirty_routers or {}),
        )

    def restore(self, state: ForwardState) -> None:
        self.seq, self.max_count = state.seq, state.max_count
        self.dirty_profiles, self.buffered = set(state.dirty_profiles), set(state.buffered)
        self.prequential_ranks = list(state.prequential_ranks)
        if self.dirty_routers is not None:
            self.dirty_routers = dict(getattr(state, "dirty_routers", {}))

    # 1. interaction update ------------------------------------------------------------------------
    async def interact(self, state: StepState) -> None:
        world, ctx = self.world, self.ctx
        users = [world.users[user_agent_id(i.user)] for i in state.interactions]
        positives = [world.items[item_agent_id(i.item)] for i in state.interactions]
        negatives = self._sample_negatives(state.step, users)
        pending: dict[str, list[RouterMessage]] = {}  # user → buffer merged in its choice
        share = self.settings.trend_share if self.settings.enabled else 0.0
        slow_size = 2 * ctx.scenario.world.router_profile_size
        advance_trends(world, share, self.settings.trend_rate, slow_size)
        if "before_act" in self.flush_on and self.buffering:
            if self.fuse_choice:
                pending = {u.agent_id: u.buffer.drain() for u in users if len(u.buffer)}
            await self.flush_before_act(state, positives + negatives + users)
        if self.prequential.enabled:  # test, then train: rank each true item before learning it
            ranks = await self.prequential.evaluate(
                state.step,
                self.seq,
                users,
                positives,
                world.items,
                self.popularities,
                world.trend_of if world.trends is not None else None,
                world.recent_of if ctx.scenario.interaction.short_term_items else None,
            )
            self.prequential_ranks.extend((state.step, r) for r in ranks)
        before: dict[str, Weights] = {}
        order = list(range(len(users)))
        rows = []  # traced once per step: rounds are often one interaction long
        remember = ctx.scenario.interaction.short_term_items
        for round_positions in conflict_free_rounds(order, users, positives, negatives):
            tasks = [
                InteractionTask(
                    user=users[p],
                    positive=positives[p],
                    negative=negatives[p],
                    step=state.step,
                    popularity={
                        positives[p].agent_id: self.popularity(positives[p]),
                        negatives[p].agent_id: self.popularity(negatives[p]),
                    },
                    messages=pending.pop(users[p].agent_id, []),
                )
                for p in round_positions
            ]
            outcomes = await ctx.brain.interact(tasks)
            merged = [
                (task.user, task.messages, outcome.merge)
                for task, outcome in zip(tasks, outcomes, strict=True)
                if task.messages and outcome.merge is not None
            ]
            if merged:
                self._apply_merges(state, merged)
            for position, task, outcome in zip(round_positions, tasks, outcomes, strict=True):
                for agent_id, update in outcome.updates.items():
                    agent = world.client(agent_id)
                    before.setdefault(agent_id, agent.original)
                    self._set_original(agent, update)
                task.user.interactions += 1
                task.positive.interactions += 1
                if remember:
                    task.user.recent = (*task.user.recent, task.positive.agent_id)[-remember:]
                self.max_count = max(self.max_count, task.positive.interactions)
                interaction = state.interactions[position]
                world.record_interaction(
                    task.user.agent_id, task.positive.agent_id, interaction.timestamp
                )
                state.n_correct += outcome.correct
                rows.append(
                    {
                        "run_id": ctx.run_id,
                        "seq": self.seq + position,
                        "step": state.step,
                        "user_id": task.user.agent_id,
                        "item_id": task.positive.agent_id,
                        "negative_id": task.negative.agent_id,
                        "chosen_id": outcome.chosen,
                        "correct": outcome.correct,
                        "timestamp": interaction.timestamp,
                    }
                )
        ctx.store.add("interactions", rows)
        self.seq += len(users)
        size = self.settings.changed_attributes
        for agent_id, old in before.items():
            delta = changes(old, world.client(agent_id).original, size)
            if delta:
                state.changed[agent_id] = delta
        world.refresh_client_vectors(before)
        world.update_memberships(before)
        self.dirty_profiles.update(before)
        self.prequential.scorer.forget(before)

    async def flush_before_act(self, state: StepState, clients: Sequence[ClientAgent]) -> None:
        """Merge the buffers of ``clients`` that are about to act (choose, be judged as a
        candidate, be ranked), when buffers flush ``before_act``."""
        if "before_act" not in self.flush_on or not self.buffering:
            return
        acting = {c.agent_id: c for c in clients if len(c.buffer)}
        # drained a merge chunk at a time (``_merge`` groups the same clients): the final flush
        # would otherwise build every buffered message of the world at once
        ids = sorted(acting, key=self.world.client_position.__getitem__)
        for start in range(0, len(ids), self.merge_chunk):
            part = ids[start : start + self.merge_chunk]
            await self._merge(state, {a: acting[a].buffer.drain() for a in part})

    def popularity(self, item: ClientAgent) -> float:
        """Popularity prior in [0, 1]: log of how often the item was chosen so far."""
        return popularity_prior(item.interactions, self.max_count)

    def popularities(self, items: Sequence[ClientAgent]) -> np.ndarray:
        """``popularity`` of many items at once."""
        counts = np.fromiter((i.interactions for i in items), np.int64, len(items))
        return popularity_priors(counts, self.max_count)

    def _sample_negatives(self, step: int, users: list[ClientAgent]) -> list[ClientAgent]:
        rng = self.ctx.seeds.generator("interaction-negatives", step)
        items = self.world.items
        negatives = []
        for user in users:
            seen = self.world.history.get(user.agent_id, set())
            while True:
                candidate = self.item_ids[int(rng.integers(len(self.item_ids)))]
                if candidate not in seen or len(seen) >= len(self.item_ids):
                    break
            negatives.append(items[candidate])
        return negatives

    def _set_original(self, agent: ClientAgent, update: ProfileUpdate) -> None:
        agent.original = update.weights
        if update.text is not None:
            agent.text = update.text

    # 2. perception -----------------------------------------------------------------------------
    def perceive(self, state: StepState) -> None:
        """Route the step's attribute changes to routers (``propagation.perception``)."""
        if not self.settings.enabled or self.settings.mode != "routers" or not state.changed:
            return
        for router_id, routed in self.perception(self.world, state.changed).items():
            bucket = state.routed.setdefault(router_id, {})
            for attribute, weight in routed.items():
                bucket[attribute] = bucket.get(attribute, 0.0) + weight

    # 3. integration ----------------------------------------------------------------------------
    async def integrate(self, state: StepState) -> None:
        if not state.routed:
            return
        ctx, world = self.ctx, self.world
        router_ids = sorted(state.routed, key=lambda r: int(r.split(":")[1]))
        tasks = [SummarizeTask(world.routers[r], state.routed[r], state.step) for r in router_ids]
        updates = await ctx.brain.summarize(tasks)
        rows = []
        for router_id, update in zip(router_ids, updates, strict=True):
            router = world.routers[router_id]
            router.profile = update.weights
            router.text = update.text
            router.version += 1
            state.updated_routers.append(router_id)
            if self.dirty_routers is None:
                rows.append(router_version_row(ctx.run_id, state.step, router, world, "integrate"))
            else:
                self.dirty_routers[router_id] = router.version
        if rows:
            ctx.store.add("router_versions", rows)

    # 4. multicast ------------------------------------------------------------------------------
    def multicast(self, state: StepState) -> None:
        """Send each updated router's profile (or its community's change, ``message: delta``) to
        the clients its routing policy picks (``propagation.routing``: its members, the clients
        it scores at least τ, or its top-k).

        In ``point_to_point`` mode (an ablation without routers) each changed client sends its own
        profile straight to its ``neighbours`` most similar clients instead. Clients that cannot
        act any more are skipped (``propagation.message_idle_clients``).
        """
        world = self.world
        point_to_point = self.settings.mode == "point_to_point"
        if point_to_point:
            senders = [s for s in state.changed if self.settings.enabled]
            profiles = [world.client(s).original for s in senders]
            taus = [-1.0] * len(senders)
        else:
            senders = state.updated_routers
            profiles = [world.routers[r].profile for r in senders]
            taus = [world.routers[r].tau for r in senders]
        if not senders:
            return
        # what is sent: the sender's profile, or what changed in the router's community this step
        sent = profiles
        if not point_to_point and self.settings.message == "delta":
            sent = [normalized(state.routed.get(r, {})) for r in senders]
        if point_to_point:
            sender_vectors = world.space.embed_many(profiles)
        else:  # embedded once per router version (perception and memberships reuse it)
            sender_vectors = np.stack([world.router_vector(r) for r in senders])
        skipped = excluded_mask(
            world,
            self.seq,
            idle=self.settings.message_idle_clients,
            kinds=self.settings.multicast_kinds,
        )
        scoped = None if point_to_point else getattr(self.routing, "members_only", None)
        if scoped is not None:  # scores only the members reached (see RoutingPolicy)
            for column, sender in enumerate(senders):
                positions, chosen = scoped(
                    world, sender, sender_vectors[column], skipped, self.settings
                )
                self._send(state, sender, dict(sent[column]), positions, chosen)
            return
        scores = world.client_vectors @ sender_vectors.T
        if skipped is not None:
            scores[skipped, :] = -np.inf
        for column, sender in enumerate(senders):
            exclude = world.client_position.get(sender)
            if exclude is not None:
                scores[exclude, column] = -np.inf
            if point_to_point:
                positions, chosen = select_recipients(
                    scores[:, column],
                    tau=taus[column],
                    max_recipients=self.settings.max_recipients,
                    top_k=self.settings.neighbours,
                )
            else:
                positions, chosen = self.routing(
                    world, sender, scores[:, column], taus[column], self.settings
                )
            self._send(state, sender, dict(sent[column]), positions, chosen)

    def _send(
        self,
        state: StepState,
        sender: str,
        snapshot: Weights,
        positions: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        world, ctx = self.world, self.ctx
        router = world.routers.get(sender)
        text = router.text if router is not None and router.text is not None else None
        flush_when_full = "full" in self.flush_on
        levels = self.message_trace
        dropped_rows = []
        multicast = Multicast(sender, state.step, snapshot, text if text is not None else "")
        for position, score in zip(positions.tolist(), scores.tolist(), strict=True):
            client = world.clients[position]
            message_id = world.new_message_id()
            state.n_messages += 1
            if not self.buffering:  # no buffer: straight to reception, in arrival order
                message = multicast.to(client.agent_id, message_id, score)
                state.to_flush.setdefault(client.agent_id, []).append(message)
                continue
            dropped = client.buffer.add(multicast, message_id, score)
            self.buffered.add(client.agent_id)
            if dropped is not None:
                state.decided["dropped"] += 1
                levels.count(dropped.router_id, "dropped")
                if levels.rows_wanted and levels.keep(dropped.message_id):
                    dropped_rows.append(
                        message_row(ctx.run_id, dropped, "dropped", OVERFLOW_RULE, state.step)
                    )
            if flush_when_full and client.buffer.is_full:
                state.to_flush.setdefault(client.agent_id, []).extend(client.buffer.drain())
        if dropped_rows:
            ctx.store.add("messages", dropped_rows)

    # 5. reception ------------------------------------------------------------------------------
    async def receive(self, state: StepState) -> None:
        """Merge what flushed this step (``state.to_flush``) into propagated profiles.

        With the buffer (default) each client's flushed messages are merged together: with the
        step's end as a trigger, in one merge per client and step (a client waiting to act may
        merge once before acting and once more when its buffer fills). This holds for
        ``capacity: 1`` too: a buffer that flushes when full
        hands its messages to ``state.to_flush``, where all of the step's flushes of one client
        are collected into that single merge. The capacity decides what overflow drops and when
        messages leave the buffer, not how many merges a step makes.

        Without the buffer (``world.buffer.enabled: false``) ``state.to_flush`` holds each
        client's messages of the step in arrival order, and every message is its own merge, in
        that order (``_merge_each``).
        """
        flush = state.to_flush
        state.to_flush = {}
        if not self.buffering:
            if flush:
                await self._merge_each(state, flush)
            return
        if "step_end" in self.flush_on:
            for agent_id in self.buffered:
                buffer = self.world.client(agent_id).buffer
                if len(buffer):
                    flush.setdefault(agent_id, []).extend(buffer.drain())
            self.buffered.clear()
        if flush:
            await self._merge(state, flush)

    async def _merge_each(self, state: StepState, arrived: dict[str, list[RouterMessage]]) -> None:
        """One merge per message, each client's messages in arrival order.

        Equivalent to merging every message the moment multicast delivers it: a merge reads and
        writes only its own client's propagated profile, and nothing between multicast and
        reception reads propagated profiles (routing scores embed original profiles). So merges
        run in rounds: round r merges the r-th message of every client that received more than r,
        one batched brain call per round, clients independent within a round. With the offline
        brain each message is therefore damped into the propagated profile on its own
        (``(1 - d) * P + d * |original| * message``, repeated), so order and damping matter,
        instead of the score-weighted mean of the step's messages being damped in once.
        """
        depth = max(len(messages) for messages in arrived.values())
        for r in range(depth):
            await self._merge(
                state, {a: [messages[r]] for a, messages in arrived.items() if len(messages) > r}
            )

    async def _merge(self, state: StepState, flush: dict[str, list[RouterMessage]]) -> None:
        ids = sorted(flush, key=self.world.client_position.__getitem__)
        for start in range(0, len(ids), self.merge_chunk):
            part = ids[start : start + self.merge_chunk]
            tasks = [MergeTask(self.world.client(a), flush[a], state.step) for a in part]
            outcomes = await self.ctx.brain.merge(tasks)
            merged = [(t.client, t.messages, o) for t, o in zip(tasks, outcomes, strict=True)]
            self._apply_merges(state, merged)

    def _apply_merges(
        self,
        state: StepState,
        merges: Sequence[tuple[ClientAgent, Sequence[RouterMessage], MergeOutcome]],
    ) -> None:
        """Write each message's fate and the clients' new propagated profiles."""
        ctx = self.ctx
        rows = []
        levels = self.message_trace
        every, record, counting = levels.level == "all", levels.rows_wanted, levels.counting
        for client, messages, outcome in merges:
            if state.keep_merges:
                state.merges.append((client.agent_id, messages, outcome.decisions))
            for message, (decision, rule_id) in zip(messages, outcome.decisions, strict=True):
                state.decided[decision] += 1
                if counting:
                    levels.count(message.router_id, decision)
                if record and (every or levels.keep(message.message_id)):
                    rows.append(message_row(ctx.run_id, message, decision, rule_id, state.step))
            if outcome.propagated is not None:
                client.propagated = outcome.propagated.weights
                client.propagated_text = outcome.propagated.text
                self.dirty_profiles.add(client.agent_id)
                self.prequential.scorer.forget((client.agent_id,))
        if rows:
            ctx.store.add("messages", rows)

    # step bookkeeping --------------------------------------------------------------------------
    def prequential_summary(self, n_steps: int) -> PrequentialSummary | None:
        """Prequential metrics of every interaction ranked so far, overall and per window."""
        pairs = np.asarray(self.prequential_ranks, dtype=np.int64).reshape(-1, 2)
        evaluation = self.ctx.scenario.evaluation
        return summarize_prequential(
            pairs[:, 0], pairs[:, 1], evaluation.ks, n_steps, evaluation.prequential.windows
        )

    def step_row(self, state: StepState, finished_at: str) -> dict[str, object]:
        interactions = state.interactions
        return {
            "run_id": self.ctx.run_id,
            "step": state.step,
            "n_interactions": len(interactions),
            "first_timestamp": interactions[0].timestamp if interactions else None,
            "last_timestamp": interactions[-1].timestamp if interactions else None,
            "n_correct": state.n_correct,
            "n_changed_attributes": sum(len(d) for d in state.changed.values()),
            "n_routers_updated": len(state.updated_routers),
            "n_messages": state.n_messages,
            "n_accepted": state.decided["accepted"],
            "n_rejected": state.decided["rejected"],
            "n_dropped": state.decided["dropped"],
            "started_at": state.started_at,
            "finished_at": finished_at,
        }

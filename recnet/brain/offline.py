"""The offline brain: a deterministic reference policy that does every agent operation with numbers.

Pipeline position: the default brain behind the phases (no network, no key). Profiles are weighted
attribute maps (``recnet.world.profile``); the operations follow DESIGN §3:

* *extract* — item metadata → attributes (genres, tags, era, title).
* *interact* (choose + reflect) — the user picks the item with the higher score; when wrong, the
  user moves towards the true item's attributes and away from the wrong one's, the true item
  absorbs the user's profile and the wrong item moves away from it; when right, both reinforce.
* *summarize* — a router's profile is an exponential moving average of routed attribute changes.
* *merge* — executable filter rules decide per message; accepted router profiles are averaged
  (weighted by routing score) into the propagated profile with damping, capped by the
  max-share rule.
* *rank* — cosine of effective profiles plus a popularity prior (item agents know how often they
  were chosen; an LLM knows which films are popular), plus, with a short-term memory
  (``interaction.short_term_items``), a weight times the candidate's mean cosine with the items
  the user chose last; from the brain's row store of unit-norm sparse profiles
  (``recnet.eval.sparse_scorer``), which prequential evaluation shares: the final test then
  rebuilds only the rows whose profiles changed since their last prequential use.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import copy
from dataclasses import replace
from functools import partial

import numpy as np

from recnet.brain.base import (
    BrainKind,
    InteractionOutcome,
    InteractionTask,
    MergeOutcome,
    MergeTask,
    OperationCounts,
    ProfileUpdate,
    RankOutcome,
    RankTask,
    SummarizeTask,
)
from recnet.brain.call_plan import CallPlan
from recnet.brain.offline_work import (
    MergeInput,
    MergeParams,
    RankInput,
    ScoreParams,
    merge_chunk,
    merge_one,
    score_one,
)
from recnet.config.scenario import InteractionSettings, Scenario
from recnet.data.types import Item
from recnet.eval.sparse_scorer import SparseProfileScorer
from recnet.exec.base import Executor, LocalExecutor
from recnet.world.agents import ClientAgent
from recnet.world.content import item_attributes
from recnet.world.formulas import router_average
from recnet.world.profile import add_scaled, normalized, top


class OfflineBrain:
    """Reference policy; see the module docstring for what each operation does."""

    kind: BrainKind = "offline"
    critic = "offline"  # the backward phase's default critic (recnet.registry.CRITICS)
    label = "offline"
    # an offline checkpoint pickles the whole world; repeating up to 99 steps costs seconds
    checkpoint_every = 100
    ranks_by_formula = True  # its ranking is the shared score formula

    def __init__(self, scenario: Scenario, executor: Executor | None = None) -> None:
        #: where merges and rankings run (``recnet.exec``); results come back in input order
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.interaction = scenario.interaction
        self.propagation = scenario.propagation
        self.profile_size = scenario.world.profile_size
        self.router_profile_size = scenario.world.router_profile_size
        self.with_titles = True
        self.filtering = scenario.world.filters.enabled
        self.operations = OperationCounts()
        #: the LLM calls the LLM brain would make for the same operations (``recnet.dry_run``)
        self.llm_calls = OperationCounts()
        self.plan = CallPlan(scenario.llm, self.llm_calls)
        #: hand a user's buffer to its interaction (merged, then it chooses) as the LLM brain
        #: does with choose_merge fused; the outcome is the same as merging before acting
        self.fuses_choose_merge = "choose_merge" in scenario.llm.fuse
        self.merge_params = MergeParams(
            self.filtering, self.propagation.merge_damping, self.profile_size
        )
        self.score_params = ScoreParams(
            self.interaction.propagated_weight, self.interaction.popularity_weight
        )
        #: every ranking's scores (bit for bit ``score_one``'s, without a short-term memory) from
        #: one store of sparse rows; prequential evaluation scores from the same store
        #: (``PrequentialEvaluator``)
        self.row_scorer = SparseProfileScorer.for_scenario(scenario)

    # helpers -----------------------------------------------------------------------------------
    def score(self, user: ClientAgent, item: ClientAgent, popularity: float) -> float:
        """Preference score of ``user`` for ``item``: cosine of effective profiles + prior."""
        return self._scores(user, [item], [popularity])[0]

    def _scores(
        self, user: ClientAgent, items: Sequence[ClientAgent], popularity: Sequence[float]
    ) -> list[float]:
        return score_one(self.score_params, rank_input(user, items, popularity))

    # operations --------------------------------------------------------------------------------
    async def extract_items(self, items: Sequence[Item]) -> dict[str, ProfileUpdate]:
        self.operations.add("extract", len(items))
        return {
            item.item_id: ProfileUpdate(item_attributes(item, with_title=self.with_titles))
            for item in items
        }

    async def interact(self, tasks: Sequence[InteractionTask]) -> list[InteractionOutcome]:
        self.operations.add("predict", len(tasks))
        return [self._interact_one(task) for task in tasks]

    def _interact_one(self, task: InteractionTask) -> InteractionOutcome:
        merged: MergeOutcome | None = None
        if task.messages:  # choose+merge: the user's buffer is merged first, as before acting
            self.operations.add("merge")
            merged = self._merge_one(MergeTask(task.user, task.messages, task.step))
            if merged.propagated is not None:
                task = replace(task, user=copy(task.user))
                task.user.propagated = merged.propagated.weights
        outcome = self._choose_and_reflect(task)
        outcome.merge = merged
        self.plan.interaction(merged=bool(task.messages), correct=outcome.correct)
        return outcome

    def _choose_and_reflect(self, task: InteractionTask) -> InteractionOutcome:
        user, positive, negative = task.user, task.positive, task.negative
        s_pos, s_neg = self._scores(
            user,
            (positive, negative),
            (task.popularity[positive.agent_id], task.popularity[negative.agent_id]),
        )
        correct = s_pos > s_neg
        rates = self.interaction
        if correct:
            self.operations.add("reflect_user")
            self.operations.add("reflect_item")
            return InteractionOutcome(
                chosen=positive.agent_id,
                correct=True,
                updates=reinforce(user, positive, rates, self.profile_size),
            )
        else:
            self.operations.add("reflect_user")
            self.operations.add("reflect_item", 2)
            pos_dir, neg_dir = normalized(positive.original), normalized(negative.original)
            new_user = add_scaled(user.original, pos_dir, rates.learning_rate)
            new_user = add_scaled(new_user, neg_dir, -rates.learning_rate)
            updates = {user.agent_id: ProfileUpdate(top(new_user, self.profile_size))}
            user_dir = normalized(new_user)
            pushed = add_scaled(negative.original, user_dir, -0.5 * rates.item_absorb_rate)
            updates[negative.agent_id] = ProfileUpdate(top(pushed, self.profile_size))
        user_dir = normalized(updates[user.agent_id].weights)
        absorbed = add_scaled(positive.original, user_dir, rates.item_absorb_rate)
        updates[positive.agent_id] = ProfileUpdate(top(absorbed, self.profile_size))
        return InteractionOutcome(chosen=negative.agent_id, correct=False, updates=updates)

    async def summarize(self, tasks: Sequence[SummarizeTask]) -> list[ProfileUpdate]:
        self.operations.add("summarize", len(tasks))
        self.plan.batched("summarize", len(tasks))
        ema, size = self.propagation.router_ema, self.router_profile_size
        return [
            ProfileUpdate(router_average(task.router.profile, task.routed, ema, size))
            for task in tasks
        ]

    async def merge(self, tasks: Sequence[MergeTask]) -> list[MergeOutcome]:
        self.operations.add("merge", len(tasks))
        self.plan.batched("merge", len(tasks))
        work = [merge_input(task) for task in tasks]
        return self.executor.map_chunks(partial(merge_chunk, self.merge_params), work)

    def _merge_one(self, task: MergeTask) -> MergeOutcome:
        return merge_one(self.merge_params, merge_input(task))

    async def rank(self, tasks: Sequence[RankTask]) -> list[RankOutcome]:
        self.operations.add("rank", len(tasks))
        self.llm_calls.add("rank", len(tasks))
        n_pairs = sum(len(t.popularity) for t in tasks)
        priors = np.fromiter((p for t in tasks for p in t.popularity), np.float64, n_pairs)
        scores = self.row_scorer.scores(
            [t.user for t in tasks],
            [t.candidates for t in tasks],
            priors,
            [t.trend or {} for t in tasks],
            [t.recent for t in tasks],
        )
        return [RankOutcome(s.tolist()) for s in scores]

    async def aclose(self) -> None:
        self.executor.close()

    def state(self) -> None:
        """Nothing to carry across a checkpoint (``recnet.checkpoint.Checkpointed``)."""
        return None

    def restore(self, state: None) -> None:
        return None


def merge_input(task: MergeTask) -> MergeInput:
    """A merge task as plain data (what a remote executor pickles)."""
    client = task.client
    return MergeInput(client.original, client.propagated, client.filters, task.messages, task.step)


def rank_input(
    user: ClientAgent, items: Sequence[ClientAgent], popularity: Sequence[float]
) -> RankInput:
    """One user's scoring of a few items as plain data (``score_one``'s input)."""
    return RankInput(
        (user.original, user.propagated),
        [(item.original, item.propagated) for item in items],
        list(popularity),
    )


def reinforce(
    user: ClientAgent, positive: ClientAgent, rates: InteractionSettings, size: int
) -> dict[str, ProfileUpdate]:
    """A right choice, numerically: the user moves a little towards the item it chose
    (``reinforce_rate``) and the item absorbs the user's profile (``item_absorb_rate``)."""
    new_user = top(
        add_scaled(user.original, normalized(positive.original), rates.reinforce_rate), size
    )
    absorbed = add_scaled(positive.original, normalized(new_user), rates.item_absorb_rate)
    return {
        user.agent_id: ProfileUpdate(new_user),
        positive.agent_id: ProfileUpdate(top(absorbed, size)),
    }

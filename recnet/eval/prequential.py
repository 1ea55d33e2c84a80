"""Prequential (test-then-train) evaluation of the training stream.

Pipeline position: called by the forward phase at the start of every step's interaction update,
after buffers flushed "before acting" were merged and before any interaction of the step is
learned. Each evaluated interaction's true item is ranked against ``n_negatives`` sampled items the
user never chose (in any split), with the profiles as they are at that moment: the standard
protocol of streaming recommenders, and the one that can see whether propagation told a user
about a change *before* the user's own choices showed it. The final leave-one-out test cannot.

Candidates depend only on the scenario's seed, the step and the dataset (never on the agents), so
every variant of one scenario and seed ranks exactly the same lists and compares pairwise. Ranks
and candidate lists go to the trace's ``prequential`` table; ``summarize_prequential`` turns them
into NDCG@K / HR@K / MRR overall and per window of steps.

The offline brain's score (cosine of effective profiles + popularity prior, see
``recnet.brain.offline``) is computed here in one vectorised pass per step
(``SparseProfileScorer``); an LLM brain ranks through its own ``rank`` operation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recnet.brain.base import RankTask
from recnet.config.scenario import PrequentialSettings
from recnet.context import RunContext
from recnet.eval.metrics import summarize
from recnet.world.agents import ClientAgent
from recnet.world.profile import Weights

#: ``evaluation.prequential.every`` when the scenario leaves it null.
DEFAULT_EVERY = {"offline": 1, "llm": 25}


def prequential_every(settings: PrequentialSettings, brain_kind: str) -> int:
    """Evaluate every n-th training interaction; 0 = off."""
    if settings.every is not None:
        return settings.every
    return DEFAULT_EVERY.get(brain_kind, DEFAULT_EVERY["llm"])


def sample_unseen(rng: np.random.Generator, n_items: int, seen: set[int], n: int) -> list[int]:
    """``n`` distinct item positions outside ``seen`` (fewer if the catalogue runs out)."""
    available = n_items - len(seen)
    n = min(n, max(available, 0))
    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < n:
        for position in rng.integers(n_items, size=2 * (n - len(chosen)) + 4).tolist():
            if position in seen or position in taken:
                continue
            taken.add(position)
            chosen.append(position)
            if len(chosen) == n:
                break
    return chosen


#: Entries of the dense user block ``SparseProfileScorer`` builds at once (32 MB of float64).
DENSE_CELLS = 1 << 22


class SparseProfileScorer:
    """The offline brain's score, ``cos(effective user, effective item) + prior * popularity``,
    for many (user, item) pairs at once.

    Each client's effective profile is kept as a unit-norm sparse row (attribute positions and
    values) and rebuilt only when the client's ``original`` or ``propagated`` map was replaced
    (profiles are immutable maps that updates swap, never edit).
    """

    def __init__(self, propagated_weight: float, popularity_weight: float) -> None:
        self.propagated_weight = propagated_weight
        self.popularity_weight = popularity_weight
        self.index: dict[str, int] = {}
        self._rows: dict[str, tuple[Weights, Weights, np.ndarray, np.ndarray]] = {}

    def forget(self, agent_ids: Iterable[str]) -> None:
        """Drop the rows of clients whose profile was just replaced. A row holds the maps it was
        built from (their identity is what says it is current), so a stale row would keep a
        client's old profile alive: 3.5 KB per agent at the end of a 10k-agent run."""
        rows = self._rows
        for agent_id in agent_ids:
            rows.pop(agent_id, None)

    def row(self, agent: ClientAgent) -> tuple[np.ndarray, np.ndarray]:
        cached = self._rows.get(agent.agent_id)
        if cached is not None and cached[0] is agent.original and cached[1] is agent.propagated:
            return cached[2], cached[3]
        profile = agent.effective(self.propagated_weight)
        index = self.index
        for attribute in profile:
            if attribute not in index:
                index[attribute] = len(index)
        positions = np.fromiter((index[a] for a in profile), np.int64, len(profile))
        values = np.fromiter(profile.values(), np.float64, len(profile))
        length = float(np.sqrt(values @ values))
        if length > 0.0:
            values = values / length
        self._rows[agent.agent_id] = (agent.original, agent.propagated, positions, values)
        return positions, values

    def scores(
        self,
        users: Sequence[ClientAgent],
        candidates: Sequence[Sequence[ClientAgent]],
        popularity: Sequence[Sequence[float]],
    ) -> list[np.ndarray]:
        """One score array per user, in candidate order; users are scored in chunks whose dense
        user rows hold about ``DENSE_CELLS`` entries (a 300k-agent world has ~10^5 attributes)."""
        out: list[np.ndarray] = []
        size = max(1, DENSE_CELLS // max(len(self.index), 1))
        for start in range(0, len(users), size):
            stop = start + size
            out.extend(
                self._scores(users[start:stop], candidates[start:stop], popularity[start:stop])
            )
        return out

    def _scores(
        self,
        users: Sequence[ClientAgent],
        candidates: Sequence[Sequence[ClientAgent]],
        popularity: Sequence[Sequence[float]],
    ) -> list[np.ndarray]:
        if not users:
            return []
        user_rows = [self.row(u) for u in users]
        item_rows = [self.row(i) for items in candidates for i in items]
        dense = np.zeros((len(users), len(self.index)), dtype=np.float64)
        for b, (positions, values) in enumerate(user_rows):
            dense[b, positions] = values
        sizes = np.fromiter((len(p) for p, _ in item_rows), np.int64, len(item_rows))
        if sizes.sum():
            positions = np.concatenate([p for p, _ in item_rows])
            values = np.concatenate([v for _, v in item_rows])
        else:
            positions = np.zeros(0, dtype=np.int64)
            values = np.zeros(0, dtype=np.float64)
        per_user = np.fromiter((len(c) for c in candidates), np.int64, len(candidates))
        owner_of_row = np.repeat(np.arange(len(users)), per_user)
        row_of_entry = np.repeat(np.arange(len(item_rows)), sizes)
        contributions = values * dense[owner_of_row[row_of_entry], positions]
        cosines = np.bincount(row_of_entry, weights=contributions, minlength=len(item_rows))
        prior = np.fromiter((p for pops in popularity for p in pops), np.float64, len(item_rows))
        flat = cosines + self.popularity_weight * prior
        return np.split(flat, np.cumsum(per_user)[:-1])


@dataclass
class PrequentialCase:
    """One evaluated training interaction and its candidate list (truth at ``true_position``)."""

    seq: int
    user: ClientAgent
    candidates: list[ClientAgent]
    true_position: int


class PrequentialEvaluator:
    """Samples, scores and traces the prequential ranks of one run."""

    def __init__(
        self, ctx: RunContext, item_ids: Sequence[str], history: Mapping[str, set[str]]
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.scenario.evaluation.prequential
        self.every = prequential_every(self.settings, ctx.brain.kind)
        self.item_ids = list(item_ids)
        self.item_position = {a: p for p, a in enumerate(self.item_ids)}
        self.history = history
        self._seen: dict[str, set[int]] = {}
        interaction = ctx.scenario.interaction
        self.scorer = SparseProfileScorer(
            interaction.propagated_weight, interaction.popularity_weight
        )

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def _seen_positions(self, user_id: str) -> set[int]:
        seen = self._seen.get(user_id)
        if seen is None:
            position = self.item_position
            seen = {position[i] for i in self.history.get(user_id, ()) if i in position}
            self._seen[user_id] = seen
        return seen

    def cases(
        self,
        step: int,
        first_seq: int,
        users: Sequence[ClientAgent],
        positives: Sequence[ClientAgent],
        items: Mapping[str, ClientAgent],
    ) -> list[PrequentialCase]:
        """The step's evaluated interactions with their seeded candidate lists."""
        if not self.enabled:
            return []
        rng = self.ctx.seeds.generator("prequential", step)
        cases = []
        for offset, (user, positive) in enumerate(zip(users, positives, strict=True)):
            seq = first_seq + offset
            if seq % self.every:
                continue
            seen = self._seen_positions(user.agent_id)
            true_item = self.item_position[positive.agent_id]
            if true_item not in seen:  # the history holds every split, so only a foreign stream
                seen = seen | {true_item}  # copies (a long history costs per copy)
            negatives = sample_unseen(rng, len(self.item_ids), seen, self.settings.n_negatives)
            true_position = int(rng.integers(len(negatives) + 1))
            candidates = [items[self.item_ids[p]] for p in negatives]
            candidates.insert(true_position, positive)
            cases.append(PrequentialCase(seq, user, candidates, true_position))
        return cases

    async def evaluate(
        self,
        step: int,
        first_seq: int,
        users: Sequence[ClientAgent],
        positives: Sequence[ClientAgent],
        items: Mapping[str, ClientAgent],
        popularity: Callable[[ClientAgent], float],
    ) -> list[int]:
        """Rank the step's evaluated interactions, trace them, return their ranks."""
        cases = self.cases(step, first_seq, users, positives, items)
        if not cases:
            return []
        popularities = [[popularity(i) for i in case.candidates] for case in cases]
        if self.ctx.brain.ranks_by_formula:
            scores = self.scorer.scores(
                [c.user for c in cases], [c.candidates for c in cases], popularities
            )
        else:
            tasks = [
                RankTask(user=c.user, candidates=c.candidates, popularity=p)
                for c, p in zip(cases, popularities, strict=True)
            ]
            scores = [
                np.asarray(o.scores, dtype=np.float64) for o in await self.ctx.brain.rank(tasks)
            ]
        ranks = [
            rank_with_ties_after(s, c.true_position) for s, c in zip(scores, cases, strict=True)
        ]
        run_id = self.ctx.run_id
        self.ctx.store.add(
            "prequential",
            [
                {
                    "run_id": run_id,
                    "seq": case.seq,
                    "step": step,
                    "user_id": case.user.agent_id,
                    "item_id": case.candidates[case.true_position].agent_id,
                    "rank": rank,
                    "n_candidates": len(case.candidates),
                    "candidates_json": json.dumps([i.agent_id for i in case.candidates]),
                }
                for case, rank in zip(cases, ranks, strict=True)
            ],
        )
        return ranks


def rank_with_ties_after(scores: np.ndarray, true_position: int) -> int:
    """1-based rank of the truth; candidates with an equal score rank above it only when they come
    earlier in the list (the list is in seeded random order, as in ``recnet.eval.metrics``)."""
    true_score = scores[true_position]
    higher = int(np.count_nonzero(scores > true_score))
    equal_before = int(np.count_nonzero(scores[:true_position] == true_score))
    return 1 + higher + equal_before


@dataclass
class PrequentialSummary:
    """Prequential metrics overall and per window of steps."""

    overall: dict[str, float]
    windows: list[tuple[int, int, int, dict[str, float]]]  # (first step, last step, n, metrics)
    n_evaluated: int


def summarize_prequential(
    steps: np.ndarray, ranks: np.ndarray, ks: Sequence[int], n_steps: int, n_windows: int
) -> PrequentialSummary | None:
    """NDCG@K / HR@K / MRR of prequential ranks, overall and over ``n_windows`` equal windows of
    steps (a window without evaluated interactions is left out)."""
    if ranks.size == 0:
        return None
    overall = summarize(ranks, ks)
    windows = []
    n_windows = max(1, min(n_windows, n_steps))
    edges = np.linspace(0, n_steps, n_windows + 1).round().astype(np.int64)
    for first, stop in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        mask = (steps >= first) & (steps < stop)
        if mask.any():
            windows.append((first, stop - 1, int(mask.sum()), summarize(ranks[mask], ks)))
    return PrequentialSummary(overall, windows, int(ranks.size))


#: ``metrics`` rows: the whole stream under this split, each window under ``WINDOW_SPLIT`` at the
#: window's last step.
PREQUENTIAL_SPLIT = "prequential"
WINDOW_SPLIT = "prequential-window"


def prequential_metric_rows(
    run_id: str,
    step: int,
    summary: PrequentialSummary | None,
    model: str = "recnet",
    flag: str | None = None,
) -> list[dict]:
    """``metrics`` table rows of a summary (none when nothing was evaluated); ``flag`` marks
    values that are not the model's own, as ``metric_rows`` does."""
    if summary is None:
        return []
    rows = [
        {
            "run_id": run_id,
            "step": step,
            "split": PREQUENTIAL_SPLIT,
            "model": model,
            "metric": name,
            "value": value,
            "flag": flag,
        }
        for name, value in summary.overall.items()
    ]
    for _, last, _, metrics in summary.windows:
        rows.extend(
            {
                "run_id": run_id,
                "step": last,
                "split": WINDOW_SPLIT,
                "model": model,
                "metric": name,
                "value": value,
                "flag": flag,
            }
            for name, value in metrics.items()
        )
    return rows

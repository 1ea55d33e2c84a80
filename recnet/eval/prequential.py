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
``recnet.brain.offline``) is computed in one vectorised pass per step
(``recnet.eval.sparse_scorer``); an LLM brain ranks through its own ``rank`` operation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recnet.brain.base import RankTask
from recnet.config.scenario import PrequentialSettings
from recnet.context import RunContext
from recnet.eval.metrics import summarize
from recnet.eval.sparse_scorer import SparseProfileScorer
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
    if n == 0:
        return []
    # the first draw almost always suffices: its new positions in order, without a Python loop
    first = rng.integers(n_items, size=2 * n + 4).tolist()
    chosen = [p for p in dict.fromkeys(first) if p not in seen][:n]
    taken = set(chosen)
    while len(chosen) < n:
        for position in rng.integers(n_items, size=2 * (n - len(chosen)) + 4).tolist():
            if position in seen or position in taken:
                continue
            taken.add(position)
            chosen.append(position)
            if len(chosen) == n:
                break
    return chosen


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
        # a formula brain's own row store when it has one (the offline brain's: its final test
        # then finds most rows built), else one of its own
        shared = getattr(ctx.brain, "row_scorer", None) if ctx.brain.ranks_by_formula else None
        self.scorer: SparseProfileScorer = shared or SparseProfileScorer.for_scenario(ctx.scenario)

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
        popularity: Callable[[Sequence[ClientAgent]], np.ndarray],
        trend_of: Callable[[str], Weights] | None = None,
        recent_of: Callable[[ClientAgent], list[ClientAgent]] | None = None,
    ) -> list[int]:
        """Rank the step's evaluated interactions, trace them, return their ranks; ``popularity``
        gives the popularity priors of a sequence of items, ``trend_of`` a user's router trend,
        ``recent_of`` the items a user chose last (its short-term memory)."""
        cases = self.cases(step, first_seq, users, positives, items)
        if not cases:
            return []
        lists = [c.candidates for c in cases]
        priors = popularity([i for candidates in lists for i in candidates])
        trends = None if trend_of is None else [trend_of(c.user.agent_id) for c in cases]
        recent = None if recent_of is None else [recent_of(c.user) for c in cases]
        if self.ctx.brain.ranks_by_formula:
            scores = self.scorer.scores([c.user for c in cases], lists, priors, trends, recent)
        else:
            split = np.cumsum([len(c) for c in lists])[:-1]
            tasks = [
                RankTask(
                    user=c.user, candidates=c.candidates, popularity=p.tolist(), trend=t, recent=r
                )
                for c, p, t, r in zip(
                    cases,
                    np.split(priors, split),
                    trends or [{}] * len(cases),
                    recent or [[]] * len(cases),
                    strict=True,
                )
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

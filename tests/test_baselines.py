"""Classic baselines: hand-checked popularity and ItemKNN, planted structure, determinism."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from recnet.baselines import (
    BPRMFScorer,
    ItemKNNScorer,
    PopularityScorer,
    RandomScorer,
    Scorer,
    evaluate_scorer,
)
from recnet.data.types import Dataset, Interaction, Item
from recnet.eval.protocol import (
    Split,
    item_universe,
    sample_candidates,
    split_leave_one_out,
)


def _planted(seed: int = 0) -> Dataset:
    """Users in 4 communities; 90% of choices fall in the community's 20 items, in random order.

    Item popularity is flat within a community, so only collaborative structure helps.
    """
    rng = np.random.default_rng(seed)
    n_users, n_items, n_comm, per_user = 80, 80, 4, 16
    size = n_items // n_comm
    rows: list[Interaction] = []
    for u in range(n_users):
        comm = u % n_comm
        own = np.arange(comm * size, (comm + 1) * size)
        other = np.setdiff1d(np.arange(n_items), own)
        n_own = round(per_user * 0.9)
        chosen = np.concatenate(
            [
                rng.choice(own, size=n_own, replace=False),
                rng.choice(other, size=per_user - n_own, replace=False),
            ]
        )
        rng.shuffle(chosen)
        rows += [Interaction(f"u{u}", f"i{i}", t) for t, i in enumerate(chosen)]
    rows.sort(key=lambda x: x.timestamp)
    items = {f"i{i}": Item(f"i{i}", f"Item {i}") for i in range(n_items)}
    return Dataset(name="planted", interactions=rows, items=items)


def _evaluate(scorer: Scorer, seed: int = 0) -> tuple[dict[str, float], dict[str, int]]:
    ds = _planted()
    split = split_leave_one_out(ds)
    cands = sample_candidates(ds, split, n_negatives=19, seed=seed)
    scorer.fit(split.train, item_universe(ds))
    return evaluate_scorer(scorer, split, cands, [1, 5, 10])


def test_all_baselines_follow_the_protocol() -> None:
    for scorer in (RandomScorer(0), PopularityScorer(), ItemKNNScorer(), BPRMFScorer(epochs=1)):
        assert isinstance(scorer, Scorer)
        assert isinstance(scorer.name, str) and scorer.name


def test_popularity_ranks_most_popular_first() -> None:
    train = [
        Interaction(u, item, t)
        for t, (u, item) in enumerate(
            [("a", "x"), ("b", "x"), ("c", "x"), ("a", "y"), ("b", "y"), ("c", "z")]
        )
    ]
    pop = PopularityScorer()
    pop.fit(train, ["x", "y", "z", "w"])
    scores = pop.score("anyone", ["w", "z", "x", "y"])
    assert list(scores) == [0.0, 1.0, 3.0, 2.0]
    assert [["w", "z", "x", "y"][i] for i in np.argsort(-scores, kind="stable")] == [
        "x",
        "y",
        "z",
        "w",
    ]


def test_evaluate_scorer_oracle_and_antioracle() -> None:
    ds = _planted()
    split = split_leave_one_out(ds)
    cands = sample_candidates(ds, split, n_negatives=9, seed=1)

    class Oracle:
        name = "oracle"

        def __init__(self, sign: float) -> None:
            self.sign = sign

        def fit(self, train: Sequence[Interaction], item_ids: Sequence[str]) -> None:
            pass

        def score(self, user: str, candidates: Sequence[str]) -> np.ndarray:
            truth = split.test[user].item
            return np.array([self.sign * (c == truth) for c in candidates], dtype=float)

    best, ranks = evaluate_scorer(Oracle(1.0), split, cands, [1, 10])
    assert best == {"ndcg@1": 1.0, "ndcg@10": 1.0, "hr@1": 1.0, "hr@10": 1.0, "mrr": 1.0}
    assert set(ranks) == set(cands) and set(ranks.values()) == {1}
    worst, ranks = evaluate_scorer(Oracle(-1.0), split, cands, [1, 10])
    assert set(ranks.values()) == {10}
    assert worst["hr@1"] == 0.0 and worst["mrr"] == pytest.approx(0.1)


def test_evaluate_scorer_rejects_wrong_score_shape() -> None:
    ds = _planted()
    split = split_leave_one_out(ds)
    cands = sample_candidates(ds, split, n_negatives=3, seed=0)

    class Broken:
        name = "broken"

        def fit(self, train: Sequence[Interaction], item_ids: Sequence[str]) -> None:
            pass

        def score(self, user: str, candidates: Sequence[str]) -> np.ndarray:
            return np.zeros(len(candidates) - 1)

    with pytest.raises(ValueError, match="broken"):
        evaluate_scorer(Broken(), split, cands, [1])


def test_random_scorer_deterministic_per_seed_and_user() -> None:
    a, b = RandomScorer(3), RandomScorer(3)
    cands = [f"i{k}" for k in range(20)]
    assert np.array_equal(a.score("u1", cands), b.score("u1", cands))
    assert not np.array_equal(a.score("u1", cands), a.score("u2", cands))
    assert not np.array_equal(a.score("u1", cands), RandomScorer(4).score("u1", cands))


def test_itemknn_hand_computed_similarities() -> None:
    # u1: A B, u2: A B C, u3: C D. Cosine: s(A,B)=1, s(A,C)=s(B,C)=0.5, s(C,D)=1/sqrt(2).
    pairs = [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B"), ("u2", "C")]
    pairs += [("u3", "C"), ("u3", "D")]
    train = [Interaction(u, i, t) for t, (u, i) in enumerate(pairs)]
    knn = ItemKNNScorer(k=2, shrink=0.0)
    knn.fit(train, ["A", "B", "C", "D", "E"])
    # u3 holds C and D: A's two neighbours are B (1.0) and C (0.5), so A scores 0.5.
    scores = knn.score("u3", ["A", "B", "E", "unknown"])
    assert scores == pytest.approx([0.5, 0.5, 0.0, 0.0])
    # u1 holds A and B: C's neighbours are D (0.707) and A or B (0.5 each, k=2 keeps one).
    assert knn.score("u1", ["C"])[0] == pytest.approx(0.5)
    # With k=1, A keeps only B, so u3 no longer reaches A.
    knn1 = ItemKNNScorer(k=1, shrink=0.0)
    knn1.fit(train, ["A", "B", "C", "D", "E"])
    assert knn1.score("u3", ["A"])[0] == 0.0
    # Shrinkage divides by sqrt(n_i n_j) + shrink: s(A,B) = 2 / (2 + 1).
    shrunk = ItemKNNScorer(k=2, shrink=1.0)
    shrunk.fit(train, ["A", "B", "C", "D", "E"])
    assert shrunk.score("u1", ["A"])[0] == pytest.approx(2 / 3)
    assert knn.score("stranger", ["A", "B"]).tolist() == [0.0, 0.0]


def test_itemknn_block_size_does_not_change_scores() -> None:
    ds = _planted()
    split = split_leave_one_out(ds)
    items = item_universe(ds)
    a, b = ItemKNNScorer(k=10, block_size=7), ItemKNNScorer(k=10, block_size=1000)
    a.fit(split.train, items)
    b.fit(split.train, items)
    for user in list(split.test)[:10]:
        assert np.allclose(a.score(user, items), b.score(user, items))


def test_collaborative_baselines_beat_random_on_planted_structure() -> None:
    rand, _ = _evaluate(RandomScorer(0))
    pop, _ = _evaluate(PopularityScorer())
    knn, _ = _evaluate(ItemKNNScorer(k=20, shrink=1.0))
    bpr, _ = _evaluate(BPRMFScorer(factors=16, epochs=40, lr=0.05, seed=0))
    for name, res in (("itemknn", knn), ("bprmf", bpr)):
        assert res["ndcg@10"] > rand["ndcg@10"] + 0.2, (name, res, rand)
        assert res["ndcg@10"] > pop["ndcg@10"] + 0.1, (name, res, pop)
        assert res["hr@10"] > rand["hr@10"], name


def test_bprmf_deterministic_for_a_seed() -> None:
    ds = _planted()
    split = split_leave_one_out(ds)
    items = item_universe(ds)
    runs = []
    for seed in (5, 5, 6):
        bpr = BPRMFScorer(factors=8, epochs=3, seed=seed)
        bpr.fit(split.train, items)
        runs.append(bpr)
    assert np.array_equal(runs[0].user_factors, runs[1].user_factors)
    assert np.array_equal(runs[0].item_factors, runs[1].item_factors)
    assert np.array_equal(runs[0].score("u1", items), runs[1].score("u1", items))
    assert not np.allclose(runs[0].item_factors, runs[2].item_factors)


def test_bprmf_training_separates_positives_from_negatives() -> None:
    ds = _planted()
    split = split_leave_one_out(ds)
    items = item_universe(ds)
    untrained = BPRMFScorer(factors=8, epochs=0, seed=0)
    trained = BPRMFScorer(factors=8, epochs=20, seed=0)
    untrained.fit(split.train, items)
    trained.fit(split.train, items)

    def auc(model: BPRMFScorer) -> float:
        wins = []
        for user in split.test:
            seen = {x.item for x in split.train if x.user == user}
            scores = dict(zip(items, model.score(user, items), strict=True))
            pos = np.array([scores[i] for i in seen])
            neg = np.array([scores[i] for i in items if i not in seen])
            wins.append(np.mean(pos[:, None] > neg[None, :]))
        return float(np.mean(wins))

    assert auc(trained) > 0.8 > auc(untrained) + 0.2


def test_bprmf_unknown_items_and_users() -> None:
    train = [Interaction("a", "x", 0), Interaction("a", "y", 1), Interaction("b", "x", 2)]
    bpr = BPRMFScorer(factors=4, epochs=5, seed=0)
    bpr.fit(train, ["x", "y", "z"])
    scores = bpr.score("a", ["x", "never-seen"])
    assert np.isfinite(scores[0]) and scores[1] == -np.inf
    stranger = bpr.score("stranger", ["x", "z"])
    assert np.allclose(stranger, bpr.item_bias[[0, 2]])


def test_split_train_only_feeds_fit() -> None:
    # Scorers see no validation or test interaction: popularity counts only train.
    ds = _planted()
    split = split_leave_one_out(ds)
    pop = PopularityScorer()
    pop.fit(split.train, item_universe(ds))
    assert sum(pop.counts.values()) == len(split.train)
    assert isinstance(split, Split)

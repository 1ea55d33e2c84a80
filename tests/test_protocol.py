"""Leave-one-out split and seeded candidate sampling (recnet.eval.protocol)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recnet.data.types import Dataset, Interaction, Item
from recnet.errors import DatasetError
from recnet.eval.protocol import (
    Split,
    _sample_excluding,
    item_universe,
    sample_candidates,
    split_leave_one_out,
    true_index,
)


def _dataset(rows: list[tuple[str, str, int]], n_items: int = 0, name: str = "tiny") -> Dataset:
    inters = [Interaction(u, i, t) for u, i, t in rows]
    items = {f"i{k}": Item(f"i{k}", f"Item {k}") for k in range(n_items)}
    for inter in inters:
        items.setdefault(inter.item, Item(inter.item, inter.item))
    return Dataset(name=name, interactions=inters, items=items)


def _random_dataset(seed: int = 0, n_users: int = 30, n_items: int = 200) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        k = int(rng.integers(3, 25))
        for item in rng.choice(n_items, size=k, replace=False):
            rows.append((f"u{u}", f"i{item}", int(rng.integers(0, 10_000))))
    return _dataset(rows, n_items=n_items)


# --- split -----------------------------------------------------------------------------------


def test_split_by_time_with_file_order_on_ties() -> None:
    ds = _dataset(
        [
            ("a", "i3", 30),
            ("b", "i1", 5),
            ("a", "i1", 10),
            ("a", "i2", 20),
            ("b", "i2", 5),  # same timestamp as the row above: file order decides
            ("a", "i4", 40),
            ("b", "i3", 5),
            ("a", "i0", 0),
        ]
    )
    split = split_leave_one_out(ds)
    assert isinstance(split, Split)
    assert split.test["a"].item == "i4" and split.valid["a"].item == "i3"
    assert split.test["b"].item == "i3" and split.valid["b"].item == "i2"
    assert [(x.user, x.item) for x in split.train] == [
        ("a", "i0"),
        ("b", "i1"),
        ("a", "i1"),
        ("a", "i2"),
    ]
    assert split.held_out("valid") is split.valid


def test_split_partitions_every_interaction() -> None:
    ds = _random_dataset(3)
    split = split_leave_one_out(ds)
    assert len(split.train) + len(split.valid) + len(split.test) == len(ds.interactions)
    assert sorted(split.test) == sorted(ds.users)
    times = [x.timestamp for x in split.train]
    assert times == sorted(times)
    for user, test in split.test.items():
        history = [x.timestamp for x in split.train if x.user == user]
        assert max(history) <= split.valid[user].timestamp <= test.timestamp


def test_split_rejects_short_users_with_remedy() -> None:
    ds = _dataset([("a", "i1", 1), ("a", "i2", 2), ("a", "i3", 3), ("z", "i1", 1)])
    with pytest.raises(DatasetError) as err:
        split_leave_one_out(ds)
    assert "z" in err.value.message and "a" not in err.value.message.split(":")[-1]
    assert "short_users" in (err.value.remedy or "")


def test_split_rejects_empty_dataset() -> None:
    with pytest.raises(DatasetError):
        split_leave_one_out(Dataset(name="empty", interactions=[], items={}))


def test_repeated_item_kept_and_candidates_hold_truth_once() -> None:
    ds = _dataset(
        [("a", "i1", 1), ("a", "i2", 2), ("a", "i1", 3), ("a", "i3", 4), ("a", "i1", 5)],
        n_items=30,
    )
    split = split_leave_one_out(ds)
    assert split.test["a"].item == "i1"
    assert [x.item for x in split.train] == ["i1", "i2", "i1"]
    cands = sample_candidates(ds, split, n_negatives=20, seed=0)["a"]
    assert cands.count("i1") == 1
    assert not {"i2", "i3"} & set(cands)


# --- candidates ------------------------------------------------------------------------------


def test_candidates_contain_truth_once_no_seen_no_duplicates() -> None:
    ds = _random_dataset(1)
    split = split_leave_one_out(ds)
    cands = sample_candidates(ds, split, n_negatives=19, seed=5)
    assert list(cands) == sorted(split.test)
    seen: dict[str, set[str]] = {}
    for x in ds.interactions:
        seen.setdefault(x.user, set()).add(x.item)
    universe = set(item_universe(ds))
    positions = []
    for user, lst in cands.items():
        truth = split.test[user].item
        assert len(lst) == 20 and len(set(lst)) == 20
        assert lst.count(truth) == 1
        assert not (set(lst) - {truth}) & seen[user]
        assert set(lst) <= universe
        positions.append(true_index(lst, truth))
    assert len(set(positions)) > 1  # lists are shuffled, the truth is not always first


def test_candidates_reproducible_and_seed_dependent() -> None:
    ds = _random_dataset(2)
    split = split_leave_one_out(ds)
    a = sample_candidates(ds, split, n_negatives=10, seed=11)
    b = sample_candidates(ds, split, n_negatives=10, seed=11)
    c = sample_candidates(ds, split, n_negatives=10, seed=12)
    assert a == b
    assert a != c
    assert sum(a[u] != c[u] for u in a) > len(a) // 2


def test_candidates_independent_of_dict_and_user_order() -> None:
    ds = _random_dataset(4)
    split = split_leave_one_out(ds)
    base = sample_candidates(ds, split, n_negatives=10, seed=3)
    shuffled_items = dict(reversed(list(ds.items.items())))
    ds2 = Dataset(name=ds.name, interactions=list(ds.interactions), items=shuffled_items)
    split2 = Split(
        train=split.train,
        valid=dict(reversed(list(split.valid.items()))),
        test=dict(reversed(list(split.test.items()))),
    )
    assert sample_candidates(ds2, split2, n_negatives=10, seed=3) == base
    # A user's list does not depend on which other users are evaluated.
    fewer = Split(train=split.train, valid=split.valid, test={"u0": split.test["u0"]})
    assert sample_candidates(ds, fewer, n_negatives=10, seed=3) == {"u0": base["u0"]}


def test_validation_candidates_use_the_validation_item() -> None:
    ds = _random_dataset(5)
    split = split_leave_one_out(ds)
    valid = sample_candidates(ds, split, n_negatives=8, seed=0, which="valid")
    test = sample_candidates(ds, split, n_negatives=8, seed=0)
    for user, lst in valid.items():
        assert lst.count(split.valid[user].item) == 1
        assert split.test[user].item not in lst  # seen by the user, so never a negative
    assert valid != test


def test_negatives_uniform_over_unseen_items() -> None:
    rows = [("a", "i0", 1), ("a", "i1", 2), ("a", "i2", 3)]
    ds = _dataset(rows, n_items=13)
    split = split_leave_one_out(ds)
    counts: Counter[str] = Counter()
    n_seeds = 3000
    for seed in range(n_seeds):
        counts.update(sample_candidates(ds, split, n_negatives=2, seed=seed)["a"])
    assert counts["i2"] == n_seeds
    assert counts["i0"] == counts["i1"] == 0
    expected = n_seeds * 2 / 10
    eligible = [f"i{k}" for k in range(3, 13)]
    assert all(abs(counts[i] - expected) < 0.15 * expected for i in eligible)


def test_dense_user_uses_exact_fallback() -> None:
    rows = [("a", f"i{k}", k) for k in range(27)]
    ds = _dataset(rows, n_items=30)  # 3 unseen items left
    split = split_leave_one_out(ds)
    lst = sample_candidates(ds, split, n_negatives=3, seed=0)["a"]
    assert sorted(lst) == ["i26", "i27", "i28", "i29"]


def test_too_few_items_raises_with_remedy() -> None:
    rows = [("a", f"i{k}", k) for k in range(27)] + [("b", f"i{k}", k) for k in range(3)]
    ds = _dataset(rows, n_items=30)
    split = split_leave_one_out(ds)
    with pytest.raises(DatasetError) as err:
        sample_candidates(ds, split, n_negatives=5, seed=0)
    assert "'a'" not in err.value.message and "a" in err.value.message.split(":")[-1]
    assert "evaluation.n_negatives" in (err.value.remedy or "")
    assert "3" in (err.value.remedy or "")


def test_negatives_from_all_may_include_seen_items() -> None:
    rows = [("a", f"i{k}", k) for k in range(27)]
    ds = _dataset(rows, n_items=30)
    split = split_leave_one_out(ds)
    lst = sample_candidates(ds, split, n_negatives=29, seed=0, negatives_from="all")["a"]
    assert sorted(lst) == sorted(f"i{k}" for k in range(30))
    assert lst.count(split.test["a"].item) == 1


def test_presampled_candidates_respected_and_shuffled() -> None:
    ds = _random_dataset(6)
    split = split_leave_one_out(ds)
    users = sorted(split.test)[:10]
    pre: dict[str, list[str]] = {}
    for user in users:
        truth = split.test[user].item
        pre[user] = [truth, "i0", "i1", "i2", "i3", "i4", "i5"]  # may include seen items
        if truth in pre[user][1:]:
            pre[user] = [truth] + [i for i in pre[user][1:] if i != truth]
    ds.candidates = pre
    out = sample_candidates(ds, split, n_negatives=4, seed=0)
    assert list(out) == users  # only users with a pre-sampled list are evaluated
    for user in users:
        truth = split.test[user].item
        expected = {truth, *[i for i in pre[user] if i != truth][:4]}
        assert set(out[user]) == expected and len(out[user]) == 5
    assert out == sample_candidates(ds, split, n_negatives=4, seed=0)
    assert any(true_index(out[u], split.test[u].item) != 0 for u in users)
    # Validation lists are sampled, not taken from the test file.
    valid = sample_candidates(ds, split, n_negatives=4, seed=0, which="valid")
    assert set(valid) == set(split.valid)


def test_presampled_candidates_shuffled_like_sampled_ones() -> None:
    ds = _random_dataset(7)
    split = split_leave_one_out(ds)
    sampled = sample_candidates(ds, split, n_negatives=6, seed=9)
    ds.candidates = {}
    for user, lst in sampled.items():
        truth = split.test[user].item
        ds.candidates[user] = [truth, *sorted(i for i in lst if i != truth)]
    again = sample_candidates(ds, split, n_negatives=6, seed=9)
    assert {u: sorted(v) for u, v in again.items()} == {u: sorted(v) for u, v in sampled.items()}
    # The permutation depends only on (seed, user, length): the truth, stored first in both
    # cases before shuffling, lands at the same position.
    for user, lst in again.items():
        truth = split.test[user].item
        assert true_index(lst, truth) == true_index(sampled[user], truth)
    other = sample_candidates(ds, split, n_negatives=6, seed=10)
    assert any(other[u] != again[u] for u in again)


def test_presampled_candidates_errors() -> None:
    ds = _random_dataset(8)
    split = split_leave_one_out(ds)
    user = sorted(split.test)[0]
    ds.candidates = {user: ["i0", "i1"]}
    if split.test[user].item in ("i0", "i1"):
        ds.candidates = {user: ["i2", "i3"]}
    with pytest.raises(DatasetError, match="do not contain the test item"):
        sample_candidates(ds, split, n_negatives=1, seed=0)
    ds.candidates = {user: [split.test[user].item, "i198", "i199"]}
    with pytest.raises(DatasetError) as err:
        sample_candidates(ds, split, n_negatives=5, seed=0)
    assert "evaluation.n_negatives" in (err.value.remedy or "")
    ds.candidates = {"nobody": ["i1"]}
    with pytest.raises(DatasetError, match="cover none"):
        sample_candidates(ds, split, n_negatives=1, seed=0)


def test_true_index() -> None:
    assert true_index(["x", "y", "z"], "z") == 2
    with pytest.raises(ValueError):
        true_index(["x"], "y")


def _sample_excluding_reference(
    rng: np.random.Generator, n_items: int, excluded: np.ndarray, n: int
) -> np.ndarray:
    """The rejection loop as first written with ``np.isin`` / ``np.unique``, which
    ``_sample_excluding`` must match draw for draw."""
    chosen = np.empty(0, dtype=np.int64)
    while chosen.size < n:
        need = n - chosen.size
        draw = rng.integers(0, n_items, size=2 * need + 8, dtype=np.int64)
        draw = draw[~np.isin(draw, excluded) & ~np.isin(draw, chosen)]
        _, first = np.unique(draw, return_index=True)
        chosen = np.concatenate([chosen, draw[np.sort(first)]])
    return chosen[:n]


def test_sample_excluding_matches_the_numpy_reference_and_leaves_the_rng_alike() -> None:
    cases = np.random.default_rng(0)
    for case in range(300):
        n_items = int(cases.integers(50, 3000))
        n = int(cases.integers(1, n_items // 5))
        excluded = np.unique(cases.integers(0, n_items, size=int(cases.integers(0, n_items // 4))))
        if n_items - excluded.size < max(2 * excluded.size, 4 * n):
            continue  # the explicit-choice branch, which both share
        ours, theirs = np.random.default_rng(case), np.random.default_rng(case)
        got = _sample_excluding(ours, n_items, excluded, n)
        assert got.dtype == np.int64
        assert np.array_equal(got, _sample_excluding_reference(theirs, n_items, excluded, n))
        assert ours.integers(1 << 30) == theirs.integers(1 << 30)  # same draws consumed
        assert not np.isin(got, excluded).any() and np.unique(got).size == n

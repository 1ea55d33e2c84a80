"""Leave-one-out split by time and seeded candidate lists: the AgentCF/RecNet evaluation protocol.

Pipeline position: dataset (``recnet.data``) → ``split_leave_one_out`` → ``sample_candidates`` →
scorers (agent brains, ``recnet.baselines``) → ``recnet.eval.metrics``.

Per user, the last interaction (by timestamp, file order on ties) is the test item, the one before
it the validation item, the rest training data. Each evaluated user gets one candidate list: the
true item plus ``n_negatives`` items sampled uniformly without replacement, then shuffled. All
randomness derives from one ``seed`` through ``np.random.SeedSequence`` with a spawn key per
(purpose, split, user), so a user's list does not depend on which other users exist or on dict
order, and negatives and shuffling use independent streams. Pre-sampled test lists (RecBole
``.random`` files, ``Dataset.candidates``) replace sampling and are shuffled the same way.

Repeated items: a user may interact with the same item more than once (RecBole files allow it;
MovieLens ratings do not). The split keeps every interaction and cuts by position, so the test or
validation item may also occur in the user's training history (repeat consumption is a legitimate
target). Negatives with ``negatives_from="unseen"`` exclude every item the user ever interacted
with in any split, so a candidate list never holds a seen item other than the truth, and it holds
the truth exactly once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from recnet.data.types import Dataset, Interaction
from recnet.errors import DatasetError

CandidateSet = dict[str, list[str]]
"""User id → candidate item ids (shuffled; the true item appears exactly once)."""

Which = Literal["test", "valid"]

_MAX_NAMED = 5  # users named in an error message


@dataclass(slots=True)
class Split:
    """A leave-one-out split: training interactions in time order, one held-out item per user."""

    train: list[Interaction]
    valid: dict[str, Interaction]
    test: dict[str, Interaction]

    def held_out(self, which: Which = "test") -> dict[str, Interaction]:
        """The held-out interactions of ``which`` ("test" or "valid")."""
        if which == "test":
            return self.test
        if which == "valid":
            return self.valid
        raise ValueError(f"which must be 'test' or 'valid', got {which!r}")


def _name_some(users: Sequence[str]) -> str:
    shown = ", ".join(users[:_MAX_NAMED])
    more = f" and {len(users) - _MAX_NAMED} more" if len(users) > _MAX_NAMED else ""
    return shown + more


def split_leave_one_out(dataset: Dataset) -> Split:
    """Split each user's history by time: last → test, second-to-last → validation, rest → train.

    Raises ``DatasetError`` naming the users with fewer than 3 interactions.
    """
    if not dataset.interactions:
        raise DatasetError(
            f"dataset {dataset.name!r} has no interactions",
            "check the dataset path and filters (dataset.min_rating, dataset.max_users)",
        )
    # A stable sort keeps file order on equal timestamps, even if a loader forgot to sort.
    ordered = sorted(dataset.interactions, key=lambda x: x.timestamp)
    positions: dict[str, list[int]] = {}
    for pos, inter in enumerate(ordered):
        positions.setdefault(inter.user, []).append(pos)
    short = sorted(u for u, p in positions.items() if len(p) < 3)
    if short:
        raise DatasetError(
            f"{len(short)} user(s) have fewer than 3 interactions and cannot be split "
            f"leave-one-out: {_name_some(short)}",
            "set dataset.short_users: drop, or filter the dataset before splitting",
        )
    held: set[int] = set()
    valid: dict[str, Interaction] = {}
    test: dict[str, Interaction] = {}
    for user in sorted(positions):
        pos = positions[user]
        valid[user] = ordered[pos[-2]]
        test[user] = ordered[pos[-1]]
        held.update(pos[-2:])
    train = [inter for pos, inter in enumerate(ordered) if pos not in held]
    return Split(train=train, valid=valid, test=test)


def _stable_int(text: str) -> int:
    """A process-independent 64-bit integer for ``text`` (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def derive_rng(seed: int, *keys: str) -> np.random.Generator:
    """An independent generator for (seed, keys...), e.g. ``derive_rng(0, "negatives", "u42")``."""
    if seed < 0:
        raise ValueError(f"seeds must be non-negative, got {seed}")
    spawn_key = tuple(_stable_int(k) for k in keys)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))


def item_universe(dataset: Dataset) -> list[str]:
    """Every item id known to the dataset (metadata or interactions), sorted for determinism."""
    ids = set(dataset.items)
    ids.update(inter.item for inter in dataset.interactions)
    return sorted(ids)


def _sample_excluding(
    rng: np.random.Generator, n_items: int, excluded: np.ndarray, n: int
) -> np.ndarray:
    """``n`` distinct indices in ``[0, n_items)`` not in ``excluded`` (sorted, unique), uniformly.

    Rejection sampling in batches; falls back to an explicit choice when most items are excluded.
    """
    eligible = n_items - excluded.size
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if eligible < 2 * excluded.size or eligible < 4 * n:
        pool = np.setdiff1d(np.arange(n_items, dtype=np.int64), excluded, assume_unique=True)
        return rng.choice(pool, size=n, replace=False)
    # each batch's new indices in draw order, first occurrence kept; Python sets beat np.isin on
    # the few hundred numbers of a batch (a 300k-agent world samples 200k lists)
    banned = set(excluded.tolist())
    chosen: dict[int, None] = {}
    while len(chosen) < n:
        need = n - len(chosen)
        draw = rng.integers(0, n_items, size=2 * need + 8, dtype=np.int64).tolist()
        chosen.update(dict.fromkeys(i for i in draw if i not in banned and i not in chosen))
    return np.fromiter(chosen, dtype=np.int64, count=len(chosen))[:n]


def _shuffled(items: list[str], seed: int, which: str, user: str) -> list[str]:
    order = derive_rng(seed, "shuffle", which, user).permutation(len(items))
    return [items[i] for i in order]


def _presampled(
    dataset: Dataset, truth: dict[str, Interaction], n_negatives: int, seed: int
) -> CandidateSet:
    """Pre-sampled lists (RecBole ``.random``): the truth plus the first ``n_negatives`` others.

    Only users that have a list are evaluated (AgentCF's files cover exactly its test users).
    """
    assert dataset.candidates is not None
    users = [u for u in sorted(truth) if u in dataset.candidates]
    if not users:
        raise DatasetError(
            f"the pre-sampled candidate lists of {dataset.name!r} cover none of its test users",
            "use the candidate file that belongs to this dataset, or drop it so that "
            "candidates are sampled from the seed",
        )
    wrong = [u for u in users if truth[u].item not in dataset.candidates[u]]
    if wrong:
        raise DatasetError(
            f"the pre-sampled candidate lists of {dataset.name!r} do not contain the test item "
            f"(the user's last interaction) for {len(wrong)} user(s): {_name_some(wrong)}",
            "make sure the candidate file belongs to this interaction file, or drop it so that "
            "candidates are sampled from the seed",
        )
    out: CandidateSet = {}
    short: list[tuple[str, int]] = []
    for user in users:
        true_item = truth[user].item
        negatives = [i for i in dict.fromkeys(dataset.candidates[user]) if i != true_item]
        if len(negatives) < n_negatives:
            short.append((user, len(negatives)))
            continue
        out[user] = _shuffled([true_item, *negatives[:n_negatives]], seed, "test", user)
    if short:
        raise DatasetError(
            f"the pre-sampled candidate lists of {dataset.name!r} hold fewer than {n_negatives} "
            f"negatives for {len(short)} user(s): {_name_some([u for u, _ in short])}",
            f"lower evaluation.n_negatives to at most {min(n for _, n in short)}",
        )
    return out


def sample_candidates(
    dataset: Dataset,
    split: Split,
    *,
    n_negatives: int,
    seed: int,
    negatives_from: Literal["unseen", "all"] = "unseen",
    which: Which = "test",
) -> CandidateSet:
    """One shuffled candidate list per held-out user: the true item plus sampled negatives.

    Negatives are drawn uniformly without replacement from the items the user never interacted
    with in any split (``"unseen"``) or from every item except the true one (``"all"``). For
    ``which="test"``, pre-sampled lists in ``dataset.candidates`` are used instead when present:
    the truth plus the first ``n_negatives`` other items of each list, for the users that have
    one. Users are returned in sorted order.
    """
    if n_negatives < 0:
        raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
    if negatives_from not in ("unseen", "all"):
        raise ValueError(f"negatives_from must be 'unseen' or 'all', got {negatives_from!r}")
    truth = split.held_out(which)
    if which == "test" and dataset.candidates is not None:
        return _presampled(dataset, truth, n_negatives, seed)

    universe = item_universe(dataset)
    index = {item: i for i, item in enumerate(universe)}
    seen: dict[str, set[int]] = {}
    if negatives_from == "unseen":
        for inter in dataset.interactions:
            seen.setdefault(inter.user, set()).add(index[inter.item])

    plans: list[tuple[str, int, np.ndarray]] = []
    too_few: list[tuple[str, int]] = []
    for user in sorted(truth):
        true_idx = index.get(truth[user].item)
        if true_idx is None:  # a split built from another dataset
            raise DatasetError(
                f"test item {truth[user].item!r} of user {user!r} is not in dataset "
                f"{dataset.name!r}",
                "build the split and the candidates from the same dataset",
            )
        excl = seen.get(user, set()) | {true_idx}
        excluded = np.fromiter(sorted(excl), dtype=np.int64, count=len(excl))
        eligible = len(universe) - excluded.size
        if eligible < n_negatives:
            too_few.append((user, eligible))
        plans.append((user, true_idx, excluded))
    if too_few:
        fewest = min(e for _, e in too_few)
        raise DatasetError(
            f"{len(too_few)} user(s) have fewer than {n_negatives} items to sample negatives "
            f"from ({negatives_from}): {_name_some([u for u, _ in too_few])}",
            f"lower evaluation.n_negatives to at most {fewest}"
            + (", or set evaluation.negatives_from: all" if negatives_from == "unseen" else ""),
        )

    out: CandidateSet = {}
    for user, true_idx, excluded in plans:
        rng = derive_rng(seed, "negatives", which, negatives_from, user)
        negs = _sample_excluding(rng, len(universe), excluded, n_negatives)
        items = [universe[true_idx]] + [universe[i] for i in negs]
        out[user] = _shuffled(items, seed, which, user)
    return out


def true_index(candidates: Sequence[str], true_item: str) -> int:
    """Position of ``true_item`` in one candidate list (raises ``ValueError`` when absent)."""
    for pos, item in enumerate(candidates):
        if item == true_item:
            return pos
    raise ValueError(f"true item {true_item!r} is not among the {len(candidates)} candidates")

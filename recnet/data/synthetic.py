"""Synthetic world with planted taste communities and scheduled preference drift.

Pipeline position: ``recnet.data.load`` calls ``generate_synthetic`` for ``kind: synthetic``;
the resulting ``Dataset`` carries a ``GroundTruth`` so that propagation can be scored (did the
news of a drift reach the users it should?).

The generative story:

* ``n_communities`` communities, each with ``attributes_per_community`` readable attributes
  (invented mood/genre pairs such as ``"velvet-noir"``), disjoint across communities.
* Items are split evenly (then shuffled) across communities. An item's genres are two of its
  community's attributes, its tags the rest of a random subset of them (at least half), and with
  probability ``noise`` one foreign attribute is added as a tag.
* Users are split evenly across communities. Each makes ``interactions_per_user`` choices at
  random times over a 180-day horizon, never the same item twice. A choice comes from the
  community the user's community currently prefers with probability ``1 - noise``, else from any
  other community; within a community, items have a mild popularity skew (weight ∝ rank^-0.5).
* ``n_drifts`` drifts happen at evenly spaced times within ``drift_window`` of the horizon:
  community ``c`` (chosen at random) starts preferring the items of another community ``d``.
  ``DriftEvent`` records the time, ``c``, the old and new attribute sets and the users of ``c``
  (who should learn of the shift).
* Staggered adoption (``drift_spread_days``, ``adopt_share``): each member of ``c`` adopts the
  new taste at its own time, uniformly within the spread after the drift starts, and only a share
  of members adopt at all; ``DriftEvent.adoption`` records who and when, and
  ``GroundTruth.user_taste`` every user's true taste over time (what an oracle knows).
* Sparse users (``sparse_share``) make only ``sparse_interactions`` choices; cold items
  (``cold_share``) are released at a random time and never chosen before it
  (``GroundTruth.item_release``).

Everything is drawn from ``numpy.random.default_rng(SeedSequence([seed, SYNTHETIC_STREAM]))``.
"""

from __future__ import annotations

import numpy as np

from recnet.config.scenario import SyntheticSettings
from recnet.data.types import Dataset, DriftEvent, GroundTruth, Interaction, Item
from recnet.errors import DatasetError

SYNTHETIC_STREAM = 0x5E7_D47A  # separates this generator's stream from other uses of the seed
START_TIME = 1_600_000_000  # 2020-09-13, seconds
HORIZON = 180 * 24 * 3600
POPULARITY_EXPONENT = 0.5

_MOODS = (
    "velvet", "neon", "rustic", "stormy", "sunlit", "haunted", "playful", "brooding", "cosmic",
    "gritty", "dreamy", "frantic", "tender", "icy", "feral", "gilded", "hollow", "lush",
    "smoky", "electric", "quiet", "savage", "whimsical", "bleak", "radiant", "tangled",
    "wistful", "brassy", "misty", "jagged", "mellow", "lurid",
)  # fmt: skip
_GENRES = (
    "noir", "western", "saga", "heist", "romance", "satire", "thriller", "fable", "odyssey",
    "farce", "mystery", "ballad", "epic", "horror", "drama", "caper", "parable", "opera",
    "chronicle", "fantasy", "documentary", "comedy", "requiem", "duel", "voyage", "elegy",
    "cabaret", "siege", "carnival", "pastoral", "serenade", "riddle",
)  # fmt: skip


def attribute_names(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct readable attribute names like ``"velvet-noir"``."""
    pool = [f"{m}-{g}" for m in _MOODS for g in _GENRES]
    order = rng.permutation(len(pool))
    names = [pool[i] for i in order[: min(count, len(pool))]]
    names += [f"{pool[order[i % len(pool)]]}-{i // len(pool)}" for i in range(len(pool), count)]
    return names


def _balanced(n: int, groups: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % groups)


def _schedule(settings: SyntheticSettings, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """``(timestamp, community, new preferred community)`` for each drift, in time order."""
    if settings.n_drifts == 0:
        return []
    if settings.n_communities < 2:
        raise DatasetError(
            f"synthetic n_drifts={settings.n_drifts} needs at least 2 communities "
            f"(n_communities={settings.n_communities})",
            "set dataset.synthetic.n_communities >= 2 or dataset.synthetic.n_drifts=0",
        )
    c = settings.n_communities
    drifts = []
    preferred = list(range(c))
    communities = rng.permutation(np.resize(np.arange(c), settings.n_drifts))
    start, end = settings.drift_window
    window_start = START_TIME + int(HORIZON * start)
    window = int(HORIZON * (end - start))
    for k, community in enumerate(communities.tolist()):
        ts = window_start + window * (k + 1) // (settings.n_drifts + 1)
        others = [g for g in range(c) if g != preferred[community]]
        target = others[int(rng.integers(len(others)))]
        preferred[community] = target
        drifts.append((ts, community, target))
    return drifts


def _items(
    settings: SyntheticSettings,
    item_comm: np.ndarray,
    comm_attrs: list[list[str]],
    rng: np.random.Generator,
) -> dict[str, Item]:
    width = len(str(settings.n_items - 1))
    all_attrs = [a for attrs in comm_attrs for a in attrs]
    items: dict[str, Item] = {}
    a = settings.attributes_per_community
    for idx, comm in enumerate(item_comm.tolist()):
        attrs = comm_attrs[comm]
        k = int(rng.integers((a + 1) // 2, a + 1))
        chosen = [attrs[j] for j in sorted(rng.permutation(a)[:k].tolist())]
        tags = chosen[2:]
        if settings.noise > 0 and rng.random() < settings.noise and len(all_attrs) > a:
            # the j-th attribute of the other communities (names are distinct and community
            # ``comm`` holds the slice ``[comm * a, (comm + 1) * a)``), without listing them
            j = int(rng.integers(len(all_attrs) - a))
            tags.append(all_attrs[j if j < comm * a else j + a])
        item_id = f"i{idx:0{width}d}"
        items[item_id] = Item(item_id, f"Item {item_id}", tuple(chosen[:2]), None, tuple(tags))
    return items


def generate_synthetic(settings: SyntheticSettings, seed: int) -> Dataset:
    """Generate a planted-community dataset with ground truth (see the module docstring)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SYNTHETIC_STREAM]))
    c, n_users, n_items = settings.n_communities, settings.n_users, settings.n_items
    if c > n_items or c > n_users:
        raise DatasetError(
            f"synthetic n_communities={c} exceeds n_users={n_users} or n_items={n_items}",
            "use fewer communities or more users and items",
        )
    names = attribute_names(c * settings.attributes_per_community, rng)
    a = settings.attributes_per_community
    comm_attrs = [names[g * a : (g + 1) * a] for g in range(c)]
    item_comm = _balanced(n_items, c, rng)
    user_comm = _balanced(n_users, c, rng)
    items = _items(settings, item_comm, comm_attrs, rng)
    item_ids = list(items)
    drifts = _schedule(settings, rng)

    members = [np.flatnonzero(item_comm == g) for g in range(c)]
    # popularity skew within a community, in a random rank order: log-weights for Gumbel top-k
    log_w = [
        -POPULARITY_EXPONENT * np.log1p(rng.permutation(len(group)).astype(float))
        for group in members
    ]
    # per community: drift times, and the community preferred from each of those times on
    change_times = [np.array([ts for ts, g2, _ in drifts if g2 == g], np.int64) for g in range(c)]
    change_targets = [[g] + [t for _, g2, t in drifts if g2 == g] for g in range(c)]

    # staggered adoption, sparse users and cold items draw from their own stream, so that a world
    # without them is exactly the world generated before these knobs existed
    extra = np.random.default_rng(np.random.SeedSequence([seed, SYNTHETIC_STREAM, 1]))
    adoption = _adoption(settings, drifts, user_comm, extra)
    sparse = extra.random(n_users) < settings.sparse_share
    release = np.full(n_items, START_TIME, dtype=np.int64)
    cold = extra.random(n_items) < settings.cold_share
    release[cold] = START_TIME + extra.integers(0, int(0.75 * HORIZON), size=int(cold.sum()))

    user_width = len(str(n_users - 1))
    rows: list[tuple[int, int, int]] = []  # (timestamp, user index, item index)
    taste: dict[int, list[tuple[int, int]]] = {}
    for u in range(n_users):
        comm = int(user_comm[u])
        wanted = settings.sparse_interactions if sparse[u] else settings.interactions_per_user
        n_choices = min(wanted, n_items)
        times = np.sort(rng.integers(START_TIME, START_TIME + HORIZON, size=n_choices))
        if adoption:
            changes = sorted(
                (a[u], target) for a, (_, _, target) in zip(adoption, drifts, strict=True) if u in a
            )
            taste[u] = changes
            starts = np.array([t for t, _ in changes], np.int64)
            epochs = np.searchsorted(starts, times, side="right")
            groups = np.asarray([comm] + [t for _, t in changes])[epochs]
        else:
            epochs = np.searchsorted(change_times[comm], times, side="right")
            groups = np.asarray(change_targets[comm])[epochs]
        outside = rng.random(n_choices) < settings.noise
        released = release if cold.any() else None
        picks = _pick_items(rng, groups, outside, members, log_w, item_comm, times, released)
        rows.extend(zip(times.tolist(), [u] * n_choices, picks, strict=True))
    rows.sort(key=lambda r: r[0])

    user_ids = [f"u{u:0{user_width}d}" for u in range(n_users)]
    interactions = [Interaction(user_ids[u], item_ids[i], ts, None) for ts, u, i in rows]
    truth = GroundTruth(
        user_community={uid: int(g) for uid, g in zip(user_ids, user_comm.tolist(), strict=True)},
        item_community={iid: int(g) for iid, g in zip(item_ids, item_comm.tolist(), strict=True)},
        community_attributes={g: tuple(comm_attrs[g]) for g in range(c)},
        drifts=[],
        user_taste={user_ids[u]: changes for u, changes in taste.items() if changes},
        item_weight={
            item_ids[i]: float(np.exp(w))
            for group, weights in zip(members, log_w, strict=True)
            for i, w in zip(group.tolist(), weights.tolist(), strict=True)
        },
        item_release={item_ids[i]: int(release[i]) for i in np.flatnonzero(cold).tolist()},
    )
    if not adoption:  # all members adopt at the drift's start
        truth.user_taste = {
            user_ids[u]: [(ts, t) for ts, g, t in drifts if g == int(user_comm[u])]
            for u in range(n_users)
            if any(g == int(user_comm[u]) for _, g, _ in drifts)
        }
    preferred = list(range(c))
    for k, (ts, comm, target) in enumerate(drifts):
        truth.drifts.append(
            DriftEvent(
                timestamp=ts,
                community=comm,
                from_attributes=tuple(comm_attrs[preferred[comm]]),
                to_attributes=tuple(comm_attrs[target]),
                users=tuple(
                    u for u, g in zip(user_ids, user_comm.tolist(), strict=True) if g == comm
                ),
                adoption={user_ids[u]: t for u, t in adoption[k].items()} if adoption else None,
            )
        )
        preferred[comm] = target
    return Dataset("synthetic", interactions, items, ground_truth=truth, source="synthetic")


def _adoption(
    settings: SyntheticSettings,
    drifts: list[tuple[int, int, int]],
    user_comm: np.ndarray,
    extra: np.random.Generator,
) -> list[dict[int, int]]:
    """Per drift, user index → adoption time (staggered, a share of members); [] when every
    member adopts every drift at its start (the knobs at their defaults)."""
    spread = int(settings.drift_spread_days * 24 * 3600)
    if spread == 0 and settings.adopt_share >= 1.0:
        return []
    adoption = []
    for ts, comm, _ in drifts:
        chosen: dict[int, int] = {}
        for u in np.flatnonzero(user_comm == comm).tolist():
            adopts = extra.random() < settings.adopt_share
            delay = int(extra.integers(0, spread + 1)) if spread else 0
            if adopts:
                chosen[u] = ts + delay
        adoption.append(chosen)
    return adoption


def _pick_items(
    rng: np.random.Generator,
    groups: np.ndarray,
    outside: np.ndarray,
    members: list[np.ndarray],
    log_w: list[np.ndarray],
    item_comm: np.ndarray,
    times: np.ndarray | None = None,
    release: np.ndarray | None = None,
) -> list[int]:
    """One user's distinct items: popularity-weighted from ``groups[t]``, or (``outside[t]``)
    uniformly from the other communities; with ``release``, never an item before its release."""
    n_items = len(item_comm)
    picks = [-1] * len(groups)
    seen: set[int] = set()
    inside = ~outside
    for g in np.unique(groups[inside]).tolist():
        slots = np.flatnonzero(inside & (groups == g)).tolist()
        keys = log_w[g] + rng.gumbel(size=len(members[g]))  # Gumbel top-k = weighted, no repeats
        if release is None or times is None:
            order = members[g][np.argsort(-keys)[: len(slots)]].tolist()
            for slot, item in zip(slots, order, strict=False):
                picks[slot] = item
                seen.add(item)
            continue
        ranked = members[g][np.argsort(-keys)].tolist()
        for slot in slots:  # in time order: the best-ranked item already released
            item = next((i for i in ranked if i not in seen and release[i] <= times[slot]), -1)
            if item >= 0:
                picks[slot] = item
                seen.add(item)
    for slot, pick in enumerate(picks):
        if pick >= 0:
            continue
        g = int(groups[slot])
        prefer_outside = bool(outside[slot])
        ok = None if release is None or times is None else release <= times[slot]
        for _ in range(32):
            item = int(rng.integers(n_items))
            if (
                item not in seen
                and (not prefer_outside or item_comm[item] != g)
                and (ok is None or ok[item])
            ):
                break
        else:
            item = next(
                i
                for i in rng.permutation(n_items).tolist()
                if i not in seen and (ok is None or ok[i])
            )
        picks[slot] = item
        seen.add(item)
    return picks

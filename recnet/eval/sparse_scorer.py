"""The offline brain's ranking score for many (user, item) pairs at once.

Pipeline position: used by prequential evaluation (``recnet.eval.prequential``) at the start of
every forward step, to rank each evaluated interaction's true item among its sampled candidates
with the profiles as they are at that moment. The score is the offline brain's
(``recnet.brain.offline``): ``cos(effective user, effective item) + prior × popularity``, a user's
effective profile with its router trend added when ``propagation.trend_share`` > 0
(``recnet.world.trend``), plus ``interaction.short_term_weight`` × the item's mean cosine with the
items the user chose last (its short-term memory) when that weight is > 0.

Each client's effective profile is held as a unit-norm sparse row (attribute columns and values)
in two flat arrays, a row store with one ``(start, length)`` slice per client. A row is rebuilt
only when the client's ``original`` or ``propagated`` map was replaced (profiles are immutable maps
that updates swap, never edit), appended at the end; the space of replaced rows is reclaimed by
compacting once it exceeds a quarter of the live rows. So a step's candidates are gathered with a
few array operations instead of one small array per candidate, and the store costs 12 bytes per
attribute of a live row, ~20 with its slack (the per-agent arrays it replaced cost ~30).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from recnet.brain.scoring import ProfileIndex
from recnet.world.agents import ClientAgent
from recnet.world.profile import Weights
from recnet.world.trend import with_trend

if TYPE_CHECKING:
    from recnet.config.scenario import Scenario

#: Users ``SparseProfileScorer`` scores at once (a few MB of temporaries per thousand users).
SCORE_USERS = 2048


def grown_copy(array: np.ndarray, size: int, used: int) -> np.ndarray:
    """A new array of ``size`` entries holding ``array``'s first ``used`` (the rest unset, never
    read before written). Growing the store this way holds the old array and one copy at its
    peak; ``np.resize`` (which fills the new room by repeating the array) holds one more array
    of that size: growing a 954 MiB array by a quarter raised the peak RSS by 1,908 MiB with
    ``np.resize``, by 955 MiB with this (the store: 27 MB at 30k agents, so ~0.9 GB at 1M)."""
    out = np.empty(size, dtype=array.dtype)
    out[:used] = array[:used]
    return out


def ragged_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat positions of the slices ``[start, start + length)``, slice after slice."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)


class SparseProfileScorer:
    """Scores candidate lists with the offline brain's formula, from a store of sparse rows."""

    def __init__(
        self,
        propagated_weight: float,
        popularity_weight: float,
        trend_share: float = 0.0,
        short_term_weight: float = 0.0,
    ) -> None:
        self.propagated_weight = propagated_weight
        self.popularity_weight = popularity_weight
        self.trend_share = trend_share  # a user's router trend in its row (``with_trend``)
        #: + this x the mean cosine of a candidate with the user's recent items
        self.short_term_weight = short_term_weight
        self.index = ProfileIndex()  # attribute -> column, as validation scoring maps them
        self._slot: dict[str, int] = {}  # agent id -> row slot
        # the maps each slot's row was built from (original, propagated, trend); their identity
        # says the row is current
        self._built_from: list[tuple[Weights, Weights, Weights | None] | None] = []
        self._start = np.zeros(64, dtype=np.int64)
        self._length = np.zeros(64, dtype=np.int64)
        self._columns = np.zeros(1024, dtype=np.int32)
        self._values = np.zeros(1024, dtype=np.float64)
        self._used = 0  # entries written to the flat arrays
        self._live = 0  # entries of current rows

    @classmethod
    def for_scenario(cls, scenario: Scenario) -> SparseProfileScorer:
        """The scorer of ``scenario``'s offline ranking formula."""
        interaction = scenario.interaction
        return cls(
            interaction.propagated_weight,
            interaction.popularity_weight,
            scenario.propagation.trend_share,
            interaction.short_term_weight,
        )

    def forget(self, agent_ids: Iterable[str]) -> None:
        """Drop the rows of clients whose profile was just replaced: the maps a row was built from
        would otherwise keep a client's old profile alive (3.5 KB per agent at the end of a
        10k-agent run), and the row's space becomes reclaimable."""
        slots, built_from, length = self._slot, self._built_from, self._length
        for agent_id in agent_ids:
            slot = slots.get(agent_id)
            if slot is not None and built_from[slot] is not None:
                built_from[slot] = None
                self._live -= int(length[slot])
                length[slot] = 0

    def slots(
        self, agents: Sequence[ClientAgent], trends: Sequence[Weights] | None = None
    ) -> np.ndarray:
        """The row slot of each agent, (re)building the rows that are missing or stale; with
        ``trends`` (one per agent, users), an agent's row holds its profile with its trend."""
        slots, built_from = self._slot, self._built_from
        out = []
        stale: dict[int, ClientAgent] = {}
        with_trends: dict[int, Weights] = {}
        for position, agent in enumerate(agents):
            slot = slots.get(agent.agent_id)
            if slot is None:
                slot = slots[agent.agent_id] = len(built_from)
                built_from.append(None)
            built = built_from[slot]
            trend = trends[position] if trends is not None and self.trend_share else None
            if (
                built is None
                or built[0] is not agent.original
                or built[1] is not agent.propagated
                or built[2] is not (trend or None)
            ):
                stale[slot] = agent
                if trend:
                    with_trends[slot] = trend
            out.append(slot)
        if stale:
            self._build(stale, with_trends)
        return np.asarray(out, dtype=np.int64)

    def _build(self, stale: dict[int, ClientAgent], trends: dict[int, Weights]) -> None:
        """Rebuild the rows of ``stale`` (slot -> agent) with one array build for all of them:
        per row only the effective map and its norm (a dot product on the row's slice, the same
        BLAS call on the same values as one row at a time, so the rows are bit for bit those)."""
        weight = self.propagated_weight
        attributes: list[str] = []
        weights: list[float] = []
        lengths: list[int] = []
        for slot, agent in stale.items():
            effective = agent.effective(weight)
            if slot in trends:
                effective = with_trend(effective, trends[slot], self.trend_share)
            attributes.extend(effective)
            weights.extend(effective.values())
            lengths.append(len(effective))
        count = len(attributes)
        index = self.index.columns
        if not index.keys() >= set(attributes):  # new columns are rare; number them in order
            for attribute in attributes:
                if attribute not in index:
                    index[attribute] = len(index)
        columns = np.fromiter(map(index.__getitem__, attributes), dtype=np.int32, count=count)
        values = np.fromiter(weights, dtype=np.float64, count=count)
        norms = np.ones(len(lengths), dtype=np.float64)
        at = 0
        for row, size in enumerate(lengths):
            if size:
                row_values = values[at : at + size]
                norm = float(np.sqrt(row_values @ row_values))
                if norm > 0.0:
                    norms[row] = norm
                at += size
        row_lengths = np.asarray(lengths, dtype=np.int64)
        values /= np.repeat(norms, row_lengths)
        slots = np.fromiter(stale, dtype=np.int64, count=len(stale))
        self._store(slots, row_lengths, columns, values)
        built_from = self._built_from
        for slot, agent in stale.items():
            built_from[slot] = (agent.original, agent.propagated, trends.get(slot))

    def _store(
        self, slots: np.ndarray, lengths: np.ndarray, columns: np.ndarray, values: np.ndarray
    ) -> None:
        """Append the rows of ``slots`` (their ``lengths`` entries of ``columns`` and ``values``,
        row after row) at the end of the store."""
        top = int(slots.max()) + 1
        if top > len(self._start):
            spare = np.zeros(max(len(self._start), top), dtype=np.int64)
            self._start = np.concatenate([self._start, spare])
            self._length = np.concatenate([self._length, spare])
        # the replaced rows (those never forgotten still count as live): their space is reclaimable
        self._live -= int(self._length[slots].sum())
        self._length[slots] = 0
        size = len(columns)
        if self._used + size > len(self._values):
            self._make_room(size)
        at = self._used
        self._columns[at : at + size] = columns
        self._values[at : at + size] = values
        self._start[slots] = at + np.cumsum(lengths) - lengths
        self._length[slots] = lengths
        self._used += size
        self._live += size

    def _make_room(self, size: int) -> None:
        """Compact when replaced rows hold more than a quarter of the live rows' space, grow by
        a quarter (or what the row needs) when still short: the store stays within ~1.6 times
        its live rows (compacting copies the live rows, about every 8 steps of MovieLens)."""
        n_slots = len(self._built_from)
        if 4 * (self._used - self._live) > self._live:
            lengths = self._length[:n_slots]
            taken = ragged_indices(self._start[:n_slots], lengths)
            live = len(taken)
            self._columns[:live] = self._columns[taken]
            self._values[:live] = self._values[taken]
            self._start[:n_slots] = np.cumsum(lengths) - lengths
            self._used = live
        if self._used + size > len(self._values):
            grown = max(len(self._values) + len(self._values) // 4, self._used + size)
            self._columns = grown_copy(self._columns, grown, self._used)
            self._values = grown_copy(self._values, grown, self._used)

    def scores(
        self,
        users: Sequence[ClientAgent],
        candidates: Sequence[Sequence[ClientAgent]],
        popularity: np.ndarray,
        trends: Sequence[Weights] | None = None,
        recent: Sequence[Sequence[ClientAgent]] | None = None,
    ) -> list[np.ndarray]:
        """One score array per user, in candidate order; ``popularity`` holds the candidates'
        priors, list after list; ``trends`` the users' router trends (``recnet.world.trend``);
        ``recent`` the items each user chose last (its short-term memory, scored against at
        ``short_term_weight``). Users are scored ``SCORE_USERS`` at a time, which bounds the
        temporary arrays (a few per candidate attribute)."""
        if not self.short_term_weight or recent is None or not any(recent):
            recent = None
        out: list[np.ndarray] = []
        offset = 0
        for start in range(0, len(users), SCORE_USERS):
            stop = start + SCORE_USERS
            lists = candidates[start:stop]
            n_pairs = sum(len(c) for c in lists)
            chunk_trends = None if trends is None else trends[start:stop]
            chunk_recent = None if recent is None else recent[start:stop]
            out.extend(
                self._scores(
                    users[start:stop],
                    lists,
                    popularity[offset : offset + n_pairs],
                    chunk_trends,
                    chunk_recent,
                )
            )
            offset += n_pairs
        return out

    def _scores(
        self,
        users: Sequence[ClientAgent],
        candidates: Sequence[Sequence[ClientAgent]],
        popularity: np.ndarray,
        trends: Sequence[Weights] | None,
        recent: Sequence[Sequence[ClientAgent]] | None = None,
    ) -> list[np.ndarray]:
        if not users:
            return []
        user_slots = self.slots(users, trends)
        item_slots = self.slots([i for items in candidates for i in items])
        recent_slots = None if recent is None else self.slots([i for r in recent for i in r])
        # read the slices only now: building a row may have compacted the store
        starts, lengths, columns, values = self._start, self._length, self._columns, self._values
        n_columns = max(len(self.index.columns), 1)
        # each user entry keyed (user, column), sorted; each candidate entry looks up its
        # owner's weight on its column there (no dense users x attributes block: a
        # million-agent world has ~5·10^5 attributes)
        user_lengths = lengths[user_slots]
        taken = ragged_indices(starts[user_slots], user_lengths)
        user_keys = np.repeat(np.arange(len(users)), user_lengths) * n_columns + columns[taken]
        user_values = values[taken]
        if recent is not None:
            assert recent_slots is not None  # built with the other slots, above
            user_keys, user_values = self._with_recent(
                user_keys, user_values, recent, recent_slots, n_columns
            )
        else:
            order = np.argsort(user_keys)
            user_keys, user_values = user_keys[order], user_values[order]
        item_lengths = lengths[item_slots]
        taken = ragged_indices(starts[item_slots], item_lengths)
        per_user = np.fromiter((len(c) for c in candidates), np.int64, len(candidates))
        owner_of_row = np.repeat(np.arange(len(users)), per_user)
        row_of_entry = np.repeat(np.arange(len(item_slots)), item_lengths)
        keys = owner_of_row[row_of_entry] * n_columns + columns[taken]
        if len(user_keys):
            found = np.minimum(np.searchsorted(user_keys, keys), len(user_keys) - 1)
            hit = user_keys[found] == keys
            contributions = np.where(hit, values[taken] * user_values[found], 0.0)
        else:
            contributions = np.zeros(len(keys), dtype=np.float64)
        cosines = np.bincount(row_of_entry, weights=contributions, minlength=len(item_slots))
        flat = cosines + self.popularity_weight * popularity
        return np.split(flat, np.cumsum(per_user)[:-1])

    def _with_recent(
        self,
        user_keys: np.ndarray,
        user_values: np.ndarray,
        recent: Sequence[Sequence[ClientAgent]],
        recent_slots: np.ndarray,
        n_columns: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each user's query row with its short-term memory added, keys sorted and unique:
        ``short_term_weight`` / k x each of its k recent items' unit rows, so that a candidate's
        score gains that weight x its mean cosine with them."""
        per_user = np.fromiter((len(r) for r in recent), np.int64, len(recent))
        lengths = self._length[recent_slots]
        taken = ragged_indices(self._start[recent_slots], lengths)
        owner = np.repeat(np.repeat(np.arange(len(recent)), per_user), lengths)
        share = self.short_term_weight / np.maximum(per_user, 1)
        keys = np.concatenate([user_keys, owner * n_columns + self._columns[taken]])
        weights = np.concatenate([user_values, self._values[taken] * share[owner]])
        order = np.argsort(keys)
        keys, weights = keys[order], weights[order]
        if not len(keys):
            return keys, weights
        first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        return keys[first], np.add.reduceat(weights, first)

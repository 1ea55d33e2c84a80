"""The prequential scorer's row store: rows rebuilt, forgotten, compacted and grown stay exact."""

from __future__ import annotations

import numpy as np

from recnet.brain.scoring import ProfileIndex
from recnet.eval.sparse_scorer import SparseProfileScorer, ragged_indices
from recnet.world.formulas import popularity_prior, popularity_priors
from tests.test_prequential import client


def test_ragged_indices_take_each_slice_in_order() -> None:
    got = ragged_indices(np.array([5, 0, 9, 2]), np.array([2, 0, 3, 1]))
    assert got.tolist() == [5, 6, 9, 10, 11, 2]
    assert ragged_indices(np.zeros(2, np.int64), np.zeros(2, np.int64)).size == 0


def test_rows_replaced_many_times_score_as_a_fresh_scorer_would() -> None:
    """Profiles are swapped again and again (some forgotten, some not): the store compacts and
    grows, and its scores stay bit for bit those of a scorer that builds every row once."""
    rng = np.random.default_rng(11)
    attributes = [f"tag:t{i}" for i in range(40)]

    def weights() -> dict[str, float]:
        chosen = rng.choice(len(attributes), int(rng.integers(0, 12)), replace=False)
        return {attributes[i]: float(rng.normal()) for i in chosen}

    users = [client(f"u:{k}", {}) for k in range(6)]
    items = [client(f"i:{k}", {}) for k in range(150)]
    kept = SparseProfileScorer(0.5, 0.2)
    peak_live = written = 0
    for round_ in range(60):
        changed = [a for a in users + items if rng.random() < 0.4]
        for agent in changed:
            agent.original, agent.propagated = weights(), weights()
        if round_ % 2:  # the forward phase forgets what it replaced; a stale row is rebuilt anyway
            kept.forget(a.agent_id for a in changed)
        lists = [[items[int(j)] for j in rng.choice(len(items), 7, replace=False)] for _ in users]
        priors = rng.random(7 * len(users))
        used = kept._used
        got = kept.scores(users, lists, priors)
        written += max(kept._used - used, 0)
        fresh = SparseProfileScorer(0.5, 0.2).scores(users, lists, priors)
        assert [g.tobytes() for g in got] == [f.tobytes() for f in fresh]
        peak_live = max(peak_live, kept._live)
        # replaced rows are reclaimed: the store grows only when live rows need the room
        assert len(kept._values) <= max(1024, 1.6 * peak_live + 2 * len(attributes))
    assert written > 3 * len(kept._values)  # it was compacted, many times over


def test_vectorised_popularity_priors_are_the_scalar_formula_bit_for_bit() -> None:
    counts = np.array([0, 1, 7, 7, 300, 12, 0])
    expected = [popularity_prior(int(c), 300) for c in counts]
    assert popularity_priors(counts, 300).tolist() == expected
    assert popularity_priors(counts[:3], 0).tolist() == [0.0, 0.0, 0.0]


def test_rows_built_together_are_the_one_row_at_a_time_rows_bit_for_bit() -> None:
    """Rows are built in one array pass per call; each equals what ``ProfileIndex.sparse`` of the
    client's effective profile, divided by its norm, gives for that client alone (same attribute
    order, same values), and a client listed twice in one call is built once."""
    rng = np.random.default_rng(5)
    attributes = [f"tag:t{i}" for i in range(60)]

    def weights(size: int) -> dict[str, float]:
        chosen = rng.choice(len(attributes), size, replace=False)
        return {attributes[i]: float(rng.normal()) * float(rng.random()) for i in chosen}

    agents = [client(f"i:{k}", {}) for k in range(80)]
    for k, agent in enumerate(agents):
        agent.original = weights(int(rng.integers(0, 40)))
        agent.propagated = weights(int(rng.integers(0, 20))) if k % 3 else {}
    agents[7].original, agents[7].propagated = {}, {}  # an empty row
    scorer = SparseProfileScorer(0.7, 0.2)
    slots = scorer.slots(agents + agents[:5])
    assert slots[80:].tolist() == slots[:5].tolist()
    assert scorer._used == sum(len(a.effective(0.7)) for a in agents)
    names = {column: name for name, column in scorer.index.columns.items()}
    for agent, slot in zip(agents, slots[:80].tolist(), strict=True):
        start, length = int(scorer._start[slot]), int(scorer._length[slot])
        got_columns = [names[int(c)] for c in scorer._columns[start : start + length]]
        got_values = scorer._values[start : start + length]
        reference = ProfileIndex()
        columns, values, norm = reference.sparse(agent.effective(0.7))
        if norm > 0.0:
            values = values / norm
        by_column = {column: name for name, column in reference.columns.items()}
        assert got_columns == [by_column[int(c)] for c in columns]
        assert got_values.tobytes() == values.tobytes()

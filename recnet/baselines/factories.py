"""Built-in baselines by name: ``factory(seed) -> Scorer`` for ``evaluation.baselines``.

Pipeline position: looked up through ``recnet.registry.BASELINES`` by the runner (scenario
baselines, scored on the same candidate lists as RecNet) and by ``experiments/harness.py``. The
hyper-parameters are those of ``experiments/check_baselines.py``. A new baseline is one module
with a ``Scorer`` class and ``BASELINES.register("name", factory)`` (or an entry point in the
``recnet.baselines`` group).
"""

from __future__ import annotations

from recnet.baselines.base import Scorer
from recnet.baselines.bprmf import BPRMFScorer
from recnet.baselines.itemknn import ItemKNNScorer
from recnet.baselines.popularity import PopularityScorer
from recnet.baselines.random_baseline import RandomScorer


def popularity(seed: int) -> Scorer:
    """Training-interaction counts (the seed is not used)."""
    return PopularityScorer()


def random(seed: int) -> Scorer:
    """Uniform scores seeded per (seed, user)."""
    return RandomScorer(seed=seed)


def itemknn(seed: int) -> Scorer:
    """Item-based k-nearest neighbours over co-occurrence cosine (deterministic)."""
    return ItemKNNScorer(k=100, shrink=10.0)


def bprmf(seed: int) -> Scorer:
    """Matrix factorisation trained with BPR."""
    return BPRMFScorer(factors=64, epochs=30, lr=0.05, reg=0.005, seed=seed)

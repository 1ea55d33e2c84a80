"""Classic baselines scored on the same leave-one-out candidate lists as the agent brains."""

from recnet.baselines.base import Scorer, evaluate_scorer
from recnet.baselines.bprmf import BPRMFScorer
from recnet.baselines.itemknn import ItemKNNScorer
from recnet.baselines.popularity import PopularityScorer
from recnet.baselines.random_baseline import RandomScorer

__all__ = [
    "BPRMFScorer",
    "ItemKNNScorer",
    "PopularityScorer",
    "RandomScorer",
    "Scorer",
    "evaluate_scorer",
]

"""Evaluation: leave-one-out split, seeded candidate lists and ranking metrics (pure numpy)."""

from recnet.eval.metrics import (
    hit_at_k,
    mrr,
    ndcg_at_k,
    rank_of_true,
    ranks_of_true,
    summarize,
)
from recnet.eval.protocol import (
    CandidateSet,
    Split,
    derive_rng,
    item_universe,
    sample_candidates,
    split_leave_one_out,
    true_index,
)

__all__ = [
    "CandidateSet",
    "Split",
    "derive_rng",
    "hit_at_k",
    "item_universe",
    "mrr",
    "ndcg_at_k",
    "rank_of_true",
    "ranks_of_true",
    "sample_candidates",
    "split_leave_one_out",
    "summarize",
    "true_index",
]

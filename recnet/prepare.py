"""Everything decided before the first step: the dataset, the leave-one-out split, the fixed
candidate lists and the step batches; and the embedder.

Pipeline position: right after scenario validation, before the world is built
(``recnet.phases.initialise``). No agents and no LLM calls here.
"""

from __future__ import annotations

from dataclasses import dataclass

from recnet.config.scenario import Scenario
from recnet.data.load import load_dataset
from recnet.data.types import Dataset, Interaction
from recnet.eval.protocol import CandidateSet, Split, sample_candidates, split_leave_one_out
from recnet.rng import SeedTree
from recnet.world.embedding import Embedder, HashingEmbedder


@dataclass
class Prepared:
    """Everything decided before the first step: data, split, candidates, batches."""

    dataset: Dataset
    split: Split
    test_candidates: CandidateSet
    valid_candidates: CandidateSet
    batches: list[list[Interaction]]


def prepare(scenario: Scenario) -> Prepared:
    """Load the dataset, split it and fix the candidate lists (no agents, no LLM)."""
    dataset = load_dataset(scenario.dataset, scenario.seed)
    split = split_leave_one_out(dataset)
    evaluation = scenario.evaluation
    test, valid = (
        sample_candidates(
            dataset,
            split,
            n_negatives=evaluation.n_negatives,
            seed=scenario.seed,
            negatives_from=evaluation.negatives_from,
            which=which,
        )
        for which in ("test", "valid")
    )
    if evaluation.max_test_users is not None and evaluation.max_test_users < len(test):
        rng = SeedTree(scenario.seed).generator("test-users")
        users = sorted(test)
        keep = sorted(rng.choice(len(users), evaluation.max_test_users, replace=False).tolist())
        chosen = {users[i] for i in keep}
        test = {u: c for u, c in test.items() if u in chosen}
        valid = {u: c for u, c in valid.items() if u in chosen}
    size = scenario.propagation.update_size
    batches = [split.train[i : i + size] for i in range(0, len(split.train), size)]
    return Prepared(dataset, split, test, valid, batches)


def build_embedder(scenario: Scenario) -> Embedder:
    """The hashing embedder (default, no download) or an OpenAI-compatible ``/embeddings``."""
    if scenario.embedder.kind == "hashing":
        return HashingEmbedder(scenario.embedder.dim)
    from recnet.llm.embeddings import OpenAIEmbedder

    return OpenAIEmbedder(scenario.embedder)

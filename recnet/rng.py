"""Explicit randomness: one scenario seed, one independent generator per purpose.

Pipeline position: owned by the ``RunContext``; every random choice (subsampling, negatives,
candidates, router seeding) asks for a generator by purpose and key, so adding a random draw in one
place never shifts the numbers drawn elsewhere. Nothing is ever seeded globally.
"""

from __future__ import annotations

import zlib

import numpy as np


class SeedTree:
    """Derives numpy generators from one seed.

    ``generator(purpose, *keys)`` = ``SeedSequence(seed, spawn_key=(crc32(purpose), *keys))``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def generator(self, purpose: str, *keys: int) -> np.random.Generator:
        spawn_key = (zlib.crc32(purpose.encode()), *keys)
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=spawn_key))

    def integer_seed(self, purpose: str) -> int:
        """A plain int seed for APIs that take one (derived, not the scenario seed itself)."""
        return int(self.generator(purpose).integers(0, 2**31 - 1))

"""Embeddings for routing: a hashing embedder (default, no download) and the attribute space.

Pipeline position: used when the world is built (cluster attributes into routers) and in every
forward step (perception: attribute → nearest router; multicast: router → clients above τ).
``Embedder`` is the protocol an OpenAI-compatible or local model plugs into. ``AttributeSpace``
turns weighted attribute maps into unit vectors as the weighted sum of attribute embeddings, so a
profile's embedding follows its weights without re-embedding text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")
#: Word vectors the hashing embedder keeps (~70 MB at dimension 256); later words are recomputed.
WORD_CACHE = 1 << 16
#: Attribute names embedded at a time when a checkpoint's matrix is made again (bounds the
#: temporaries of ``HashingEmbedder.embed``: ~64 MB per call at dimension 256).
REEMBED_ROWS = 1 << 16


class Embedder(Protocol):
    """Maps texts to L2-normalised row vectors of a fixed dimension."""

    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEmbedder:
    """Deterministic random-projection embedder: every token gets a Gaussian vector seeded by its
    hash; a text is the weighted sum of its tokens (the whole text, then its words at half weight).

    Different texts share direction only through shared words, so cosine similarities mean word
    overlap; that is enough for routing on attribute names and needs no model download.
    """

    #: ``embed`` is a pure function of the texts, ``dim`` and the salt: a checkpoint keeps this
    #: embedder instead of the attribute matrix it made (``AttributeSpace.__getstate__``).
    reproducible = True

    def __init__(self, dim: int = 256, salt: str = "recnet") -> None:
        self.dim = dim
        self._salt = salt.encode()
        self._cache: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, object]:
        """Pickle the recipe (dimension and salt), not the word cache."""
        return {**self.__dict__, "_cache": {}}

    def token_vector(self, token: str) -> np.ndarray:
        """The token's Gaussian vector, a pure function of the token (and the salt)."""
        digest = hashlib.blake2b(token.encode(), digest_size=8, key=self._salt).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        return rng.standard_normal(self.dim).astype(np.float32) / np.sqrt(self.dim)

    def word_vector(self, word: str) -> np.ndarray:
        """``token_vector`` of a word, cached while the cache holds fewer than ``WORD_CACHE``
        words (words repeat across attributes; a million-agent world has ~10^6 unique ones,
        which would cost ~1 KB each for good)."""
        vector = self._cache.get(word)
        if vector is None:
            vector = self.token_vector(word)
            if len(self._cache) < WORD_CACHE:
                self._cache[word] = vector
        return vector

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # a whole text is embedded once (AttributeSpace keeps its row), so only words are cached
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            lowered = text.lower().strip()
            vector = self.token_vector(lowered)
            _, _, tail = lowered.partition(":")
            for word in _WORD.findall(tail or lowered):
                if word != lowered:
                    vector += 0.5 * self.word_vector(word)
            out[row] = vector
        return _normalize_rows(out)


class AttributeSpace:
    """Vocabulary of attributes with one embedding row each; embeds weight maps."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        # A remote embedder learns its dimension from its first answer: ask once.
        self.dim = embedder.dim or int(embedder.embed(["dimension probe"]).shape[1])
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)

    def __getstate__(self) -> dict[str, object]:
        """Pickle the names; the matrix only when it cannot be made again. With a reproducible
        embedder (the hashing one) the embedder is kept and the matrix left out, to be embedded
        again, bit for bit, when loaded: its random floats do not compress and were 40 % of a
        30k-agent checkpoint. Any other embedder is left out (it may hold a network client; see
        ``attach``) and the matrix kept, without its spare rows (it grows by doubling)."""
        state = dict(self.__dict__)
        if getattr(self.embedder, "reproducible", False):
            state["_matrix"] = None
        else:
            state["embedder"] = None
            state["_matrix"] = self.matrix
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if self._matrix is None:  # left out by a reproducible embedder: embed the names again
            matrix = np.zeros((len(self.names), self.dim), dtype=np.float32)
            for start in range(0, len(self.names), REEMBED_ROWS):
                chunk = self.names[start : start + REEMBED_ROWS]
                matrix[start : start + len(chunk)] = self.embedder.embed(chunk)
            self._matrix = matrix

    def attach(self, embedder: Embedder) -> None:
        """Give a restored space its embedder back."""
        if embedder.dim != self.dim:
            raise ValueError(f"embedder dimension {embedder.dim} != space dimension {self.dim}")
        self.embedder = embedder

    @property
    def matrix(self) -> np.ndarray:
        """``(n_attributes, dim)`` unit rows, in vocabulary order."""
        return self._matrix[: len(self.names)]

    def add(self, attributes: Sequence[str]) -> None:
        """Embed attributes not yet in the vocabulary (in one batch)."""
        new = [a for a in dict.fromkeys(attributes) if a not in self.index]
        if not new:
            return
        if self.embedder is None:  # a checkpoint's space before ``attach``
            raise RuntimeError(f"attribute space has no embedder to embed {new[0]!r}: attach one")
        vectors = self.embedder.embed(new)
        start = len(self.names)
        needed = start + len(new)
        if needed > self._matrix.shape[0]:
            grown = np.zeros((max(needed, 2 * self._matrix.shape[0]), self.dim), dtype=np.float32)
            grown[:start] = self._matrix[:start]
            self._matrix = grown
        self._matrix[start:needed] = vectors
        for offset, attribute in enumerate(new):
            self.index[attribute] = start + offset
            self.names.append(attribute)

    def embed_weights(self, weights: Mapping[str, float]) -> np.ndarray:
        """Unit vector of ``Σ w_a e_a`` (zeros for an empty map); unknown attributes are added."""
        if not weights:
            return np.zeros(self.dim, dtype=np.float32)
        index = self.index
        if not weights.keys() <= index.keys():  # a set comparison at C speed (the usual case)
            self.add([a for a in weights if a not in index])
        idx = np.fromiter(map(index.__getitem__, weights), dtype=np.int64, count=len(weights))
        w = np.fromiter(weights.values(), dtype=np.float32, count=len(weights))
        vector = w @ self._matrix[idx]
        n = float(np.linalg.norm(vector))
        return vector / n if n > 0 else vector

    def embed_many(self, maps: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Stack of ``embed_weights`` rows."""
        out = np.zeros((len(maps), self.dim), dtype=np.float32)
        for row, weights in enumerate(maps):
            out[row] = self.embed_weights(weights)
        return out


def _normalize_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms

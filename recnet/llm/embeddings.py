"""Embeddings from an OpenAI-compatible ``/embeddings`` endpoint (``embedder.kind: openai``).

Pipeline position: one of the pluggable embedders the world uses for routing (attributes,
routers, clients); the hashing embedder is the default. ``embed`` sends the texts in batches,
returns one L2-normalised float64 row per text (an all-zero vector stays zero), and is
synchronous — it uses the SDK's sync client, so it is safe to call from inside a running event
loop. The SDK retries transient failures itself here (``max_retries``); errors that remain are
``BackendError``s with a remedy. The API key follows the rule in ``recnet.llm.credentials``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import openai
from openai import OpenAI

from recnet.config.scenario import EmbedderSettings
from recnet.llm.credentials import resolve_api_key
from recnet.llm.openai_backend import map_openai_error


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class OpenAIEmbedder:
    """Batched, normalised embeddings through ``openai.OpenAI(...).embeddings.create``."""

    def __init__(
        self,
        settings: EmbedderSettings,
        *,
        batch_size: int = 128,
        timeout: float = 60.0,
        max_retries: int = 3,
        environ: Mapping[str, str] | None = None,
        client: OpenAI | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.settings = settings
        self.batch_size = batch_size
        self._secret = resolve_api_key(settings.api_key_env, settings.base_url, environ)
        self._client = client or OpenAI(
            api_key=self._secret,
            base_url=settings.base_url,
            max_retries=max_retries,
            timeout=timeout,
        )
        self.dim: int | None = None
        self.requests = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text, in input order."""
        if not texts:
            return np.zeros((0, self.dim or 0), dtype=np.float64)
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            try:
                response = self._client.embeddings.create(
                    model=self.settings.model, input=batch, encoding_format="float"
                )
            except openai.OpenAIError as exc:
                error = map_openai_error(exc, secret=self._secret)
                error.message = f"embedding request failed: {error.message}"
                raise error from None
            self.requests += 1
            ordered = sorted(response.data, key=lambda d: d.index)
            if len(ordered) != len(batch):
                raise map_openai_error(
                    ValueError(f"asked for {len(batch)} embeddings, got {len(ordered)}")
                )
            rows.extend(np.asarray(d.embedding, dtype=np.float64) for d in ordered)
        matrix = np.vstack(rows)
        self.dim = matrix.shape[1]
        return l2_normalise(matrix)

    def close(self) -> None:
        self._client.close()

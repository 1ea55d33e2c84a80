"""The OpenAI-compatible embeddings backend drives routing end to end (real ``openai`` client
against the local test server), and the world's attribute space takes its dimension from it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from llm_server import LLMTestServer

from recnet.config.loader import validate_scenario
from recnet.runner import build_embedder, simulate


def test_openai_embedder_runs_a_synthetic_world(tmp_path: Path) -> None:
    with LLMTestServer(embedding_dim=24) as server:
        scenario = validate_scenario(
            {
                "seed": 2,
                "dataset": {
                    "kind": "synthetic",
                    "synthetic": {"n_users": 20, "n_items": 40, "interactions_per_user": 6},
                },
                "world": {"n_routers": 4},
                "propagation": {"update_size": 10, "tau": 0.1},
                "evaluation": {"n_negatives": 5},
                "embedder": {
                    "kind": "openai",
                    "base_url": server.base_url,
                    "api_key_env": "RECNET_TEST_UNSET_KEY",
                    "model": "test-embedder",
                },
            }
        )
        embedder = build_embedder(scenario)
        vectors = embedder.embed(["genre:comedy", "genre:drama"])
        assert vectors.shape == (2, 24)
        result = asyncio.run(simulate(scenario, trace_path=tmp_path / "t.sqlite"))
        embedded = [r for r in server.requests if r.path.endswith("/embeddings")]
    assert embedded, "the run never asked the embeddings endpoint"
    assert 0.0 <= result.metrics["recnet"]["ndcg@10"] <= 1.0
    db = sqlite3.connect(tmp_path / "t.sqlite")
    sent = db.execute("SELECT sum(n_messages) FROM steps").fetchone()[0]
    db.close()
    assert sent > 0, "routers multicast nothing with the remote embeddings"

"""Record/replay cache of LLM answers in one SQLite file (WAL), keyed by ``request_key``.

Pipeline position: the outermost layer of the backend stack (provider ← retry ← rate limit ←
budget ← cache), so a hit costs no call, token or dollar. Modes:

- ``record``: read-through — a hit answers from the file, a miss asks the inner backend and
  stores the answer. Resuming a run re-uses every answer already paid for.
- ``replay``: answers only from the file, with no inner backend; a miss is a ``BackendError``.
  Same scenario + seed + replay cache ⇒ the same answers ⇒ the same trace.

The file stores the canonical request (model, messages, parameters, schema, pack identity — never
an API key or header), the answer text and its token counts. Table ``llm_cache``; format version
in ``cache_meta``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from recnet.errors import BackendError
from recnet.llm.protocol import (
    LLMBackend,
    LLMRequest,
    LLMResponse,
    canonical_json,
    canonical_request,
    request_key,
)
from recnet.llm.stats import LLMStats

CACHE_FORMAT = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS llm_cache (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    operation TEXT,
    agent_id TEXT,
    request_json TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    latency_ms REAL,
    created_at TEXT NOT NULL
);
"""


class CachingBackend:
    """Answers repeated requests from a SQLite file; see the module docstring for the modes."""

    def __init__(
        self,
        inner: LLMBackend | None,
        path: Path,
        *,
        mode: Literal["record", "replay"] = "record",
        stats: LLMStats | None = None,
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.inner = inner
        self.stats = stats if stats is not None else LLMStats()
        if mode == "record" and inner is None:
            raise ValueError("record mode needs an inner backend")
        if mode == "replay" and not self.path.is_file():
            raise BackendError(
                f"replay cache {self.path} does not exist",
                "record a run first (llm.backend: openai with llm.cache.enabled: true), or point "
                "llm.cache.path at the recording",
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_format()
        except sqlite3.DatabaseError as exc:
            raise BackendError(
                f"LLM cache {self.path} is not a readable SQLite cache: {exc}",
                "delete the file or point llm.cache.path somewhere else",
            ) from exc
        self._lock = threading.Lock()

    def _check_format(self) -> None:
        row = self._db.execute("SELECT value FROM cache_meta WHERE key='format'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO cache_meta (key, value) VALUES ('format', ?)", (str(CACHE_FORMAT),)
            )
        elif row[0] != str(CACHE_FORMAT):
            raise BackendError(
                f"LLM cache {self.path} has format {row[0]}, this recnet reads {CACHE_FORMAT}",
                "re-record the cache with this version of recnet",
            )

    def lookup(self, key: str) -> LLMResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, tokens_in, tokens_out, model FROM llm_cache WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return LLMResponse(
            text=row[0],
            tokens_in=int(row[1]),
            tokens_out=int(row[2]),
            latency_ms=0.0,
            model=row[3],
            cache_hit=True,
            attempts=0,
        )

    def store(self, key: str, request: LLMRequest, response: LLMResponse) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO llm_cache (key, model, operation, agent_id, request_json, "
                "text, tokens_in, tokens_out, latency_ms, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    response.model,
                    request.operation,
                    request.agent_id,
                    canonical_json(canonical_request(request)),
                    response.text,
                    response.tokens_in,
                    response.tokens_out,
                    response.latency_ms,
                    datetime.now(UTC).isoformat(timespec="seconds"),
                ),
            )

    def size(self) -> int:
        """Number of stored answers."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM llm_cache").fetchone()[0])

    async def complete(self, request: LLMRequest) -> LLMResponse:
        key = request_key(request)
        hit = self.lookup(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        if self.mode == "replay" or self.inner is None:
            raise BackendError(
                f"replay cache miss for {request.operation} of {request.agent_id or '?'}: "
                f"the recording does not contain this request (key {key[:12]}…)",
                f"replay needs the same scenario, seed, model, parameters and prompt pack "
                f"(pack {request.pack_name} {request.pack_version}, hash "
                f"{(request.pack_hash or '?')[:12]}) as the recording in {self.path}; or record "
                "the missing answers with llm.backend: openai and llm.cache.enabled: true",
            )
        response = await self.inner.complete(request)
        self.store(key, request, response)
        return response

    def recorded_requests(self) -> list[dict[str, object]]:
        """Every stored canonical request (for inspection tools)."""
        with self._lock:
            rows = self._db.execute("SELECT request_json FROM llm_cache ORDER BY rowid").fetchall()
        return [json.loads(r[0]) for r in rows]

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()
        with self._lock:
            self._db.close()

"""Record/replay cache of LLM answers in one SQLite file (WAL), keyed by request and source.

Pipeline position: the outermost layer of the backend stack (provider ← retry ← rate limit ←
budget ← cache), so a hit costs no call, token or dollar. Modes:

- ``record``: read-through — a hit answers from the file, a miss asks the inner backend and
  stores the answer. Resuming a run re-uses every answer already paid for.
- ``replay``: answers only from the file, with no inner backend; a miss is a ``BackendError``.
  Same scenario + seed + replay cache ⇒ the same answers ⇒ the same trace.

**Source.** An answer depends on who gave it, not only on the request: the key is the sha256 of
the canonical request (model, messages, parameters, schema, pack identity) *and* the answering
source — ``source_of(settings)``: the backend, the endpoint (``llm.cache.namespace``, else
``llm.base_url``) and, for scripted and custom backends, a hash of ``llm.options``. Switching
server or backend therefore never replays the other server's answers. Replaying answers of another
source is explicit: ``llm.cache.replay_from: <source>`` (each such answer counted in
``LLMStats.foreign_replays``, so the run's metrics are marked). ``replay`` mode replays the one
recorded source whose endpoint is the scenario's (or the only source when the scenario names
none) and otherwise fails with the recorded sources listed.

The file stores the canonical request (never an API key or header), the source, the answer text
and its token counts. Table ``llm_cache``; format version in ``cache_meta``. A format-1 file
(before sources were recorded) is upgraded in place; its answers keep source ``LEGACY_SOURCE``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from recnet.config.scenario import LLMSettings
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

log = logging.getLogger(__name__)

CACHE_FORMAT = 2

#: The source of answers recorded before the cache knew sources (format 1).
LEGACY_SOURCE = "unknown (recorded before recnet kept sources)"
#: The source of a ``CachingBackend`` built without one (direct use in code and tests).
UNNAMED_SOURCE = "unnamed"

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
    created_at TEXT NOT NULL,
    request_key TEXT,
    source TEXT,
    endpoint TEXT
);
"""

_UPGRADE_1_TO_2 = f"""
ALTER TABLE llm_cache ADD COLUMN request_key TEXT;
ALTER TABLE llm_cache ADD COLUMN source TEXT;
ALTER TABLE llm_cache ADD COLUMN endpoint TEXT;
UPDATE llm_cache SET request_key = key, source = '{LEGACY_SOURCE}';
UPDATE cache_meta SET value = '2' WHERE key = 'format';
"""

_INDEX = "CREATE INDEX IF NOT EXISTS ix_llm_cache_request ON llm_cache (request_key, source);"

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"


def endpoint_of(settings: LLMSettings) -> str | None:
    """Where answers come from: ``ns:<llm.cache.namespace>``, else the base URL (a fleet's URLs,
    sorted and joined by commas: any of its servers may answer), else None."""
    if settings.cache.namespace:
        return f"ns:{settings.cache.namespace}"
    urls = settings.base_url if isinstance(settings.base_url, list) else [settings.base_url]
    urls += [endpoint.url for endpoint in settings.endpoints]
    found = sorted({url.strip().rstrip("/") for url in urls if url})
    if found:
        return ",".join(found)
    if settings.backend == "openai":
        return OPENAI_DEFAULT_URL
    return None


def source_of(settings: LLMSettings) -> str:
    """The answering source of a non-replay backend: ``<backend>[@<endpoint>][#<options hash>]``."""
    label = settings.backend
    endpoint = endpoint_of(settings)
    if endpoint is not None:
        label += f"@{endpoint}"
    if settings.options and settings.backend != "openai":
        digest = hashlib.sha256(canonical_json(settings.options).encode("utf-8")).hexdigest()
        label += f"#{digest[:12]}"
    return label


def source_key(request: LLMRequest, source: str) -> str:
    """The cache key of ``request`` answered by ``source``."""
    if source == LEGACY_SOURCE:
        return request_key(request)
    data = {"request": canonical_request(request), "source": source}
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


class CachingBackend:
    """Answers repeated requests from a SQLite file; see the module docstring for the modes."""

    def __init__(
        self,
        inner: LLMBackend | None,
        path: Path,
        *,
        mode: Literal["record", "replay"] = "record",
        stats: LLMStats | None = None,
        source: str = UNNAMED_SOURCE,
        endpoint: str | None = None,
        replay_from: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.inner = inner
        self.stats = stats if stats is not None else LLMStats()
        self.source = source  # who answers a miss (record mode)
        self.endpoint = endpoint  # the scenario's endpoint (namespace or base URL), if any
        self.replay_from = replay_from
        self._warned_other_source = False
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
            self._db.executescript(_INDEX)
        except sqlite3.DatabaseError as exc:
            raise BackendError(
                f"LLM cache {self.path} is not a readable SQLite cache: {exc}",
                "delete the file or point llm.cache.path somewhere else",
            ) from exc
        self._lock = threading.Lock()
        # Whose answers a hit may return: the source itself in record mode, the chosen recorded
        # source in replay mode. ``foreign`` marks answers recorded by another server.
        self.replay_source = self._choose_replay_source() if mode == "replay" else None
        self.foreign = self._is_foreign(self.replay_source) if mode == "replay" else False

    def sources(self) -> dict[str, str | None]:
        """Every recorded source with its endpoint."""
        rows = self._db.execute("SELECT DISTINCT source, endpoint FROM llm_cache").fetchall()
        return {str(r[0]): r[1] for r in rows}

    def _is_foreign(self, source: str | None) -> bool:
        if source is None or source == self.source:
            return False
        recorded = self.sources().get(source)
        return self.mode == "record" or self.endpoint is None or recorded != self.endpoint

    def _choose_replay_source(self) -> str | None:
        sources = self.sources()
        listed = ", ".join(f"'{name}'" for name in sorted(sources)) or "none"
        if self.replay_from is not None:
            if self.replay_from not in sources:
                raise BackendError(
                    f"llm.cache.replay_from is '{self.replay_from}', but {self.path} holds no "
                    f"answers from it (recorded sources: {listed})",
                    "set llm.cache.replay_from to one of the recorded sources",
                )
            return self.replay_from
        if not sources:
            return None
        matching = [s for s, e in sources.items() if self.endpoint is None or e == self.endpoint]
        if len(matching) == 1:
            return matching[0]
        wanted = f"endpoint {self.endpoint}" if self.endpoint else "no endpoint"
        raise BackendError(
            f"cannot tell which answers to replay: {self.path} holds answers from {listed} and "
            f"this scenario names {wanted}",
            "set llm.cache.replay_from to the recorded source to replay (answers from another "
            "server mark the run's metrics as replayed), or llm.base_url / llm.cache.namespace "
            "to the endpoint of the recording",
        )

    def _check_format(self) -> None:
        row = self._db.execute("SELECT value FROM cache_meta WHERE key='format'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO cache_meta (key, value) VALUES ('format', ?)", (str(CACHE_FORMAT),)
            )
        elif row[0] == "1":
            self._db.executescript(_UPGRADE_1_TO_2)
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
                "text, tokens_in, tokens_out, latency_ms, created_at, request_key, source, "
                "endpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    request_key(request),
                    self.source,
                    self.endpoint,
                ),
            )

    def size(self) -> int:
        """Number of stored answers."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM llm_cache").fetchone()[0])

    def _hit(self, request: LLMRequest, source: str | None, foreign: bool) -> LLMResponse | None:
        if source is None:
            return None
        hit = self.lookup(source_key(request, source))
        if hit is not None:
            self.stats.cache_hits += 1
            if foreign:
                self.stats.note_foreign_replay(source)
        return hit

    def _warn_if_recorded_elsewhere(self, request: LLMRequest) -> None:
        if self._warned_other_source:
            return
        with self._lock:
            row = self._db.execute(
                "SELECT source FROM llm_cache WHERE request_key = ? AND source != ? LIMIT 1",
                (request_key(request), self.source),
            ).fetchone()
        if row is not None:
            self._warned_other_source = True
            log.warning(
                "%s holds answers to this run's requests from '%s', not from '%s'; they are not "
                "replayed (set llm.cache.replay_from: '%s' to replay them explicitly)",
                self.path,
                row[0],
                self.source,
                row[0],
            )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self.mode == "replay":
            hit = self._hit(request, self.replay_source, self.foreign)
        else:
            hit = self._hit(request, self.source, False)
            if hit is None and self.replay_from is not None:
                hit = self._hit(request, self.replay_from, self.replay_from != self.source)
        if hit is not None:
            return hit
        key = source_key(request, self.replay_source or self.source)
        if self.mode == "replay" or self.inner is None:
            raise BackendError(
                f"replay cache miss for {request.operation} of {request.agent_id or '?'}: "
                f"the recording does not contain this request (key {key[:12]}…)",
                f"replay needs the same scenario, seed, model, parameters and prompt pack "
                f"(pack {request.pack_name} {request.pack_version}, hash "
                f"{(request.pack_hash or '?')[:12]}) as the recording in {self.path}; or record "
                "the missing answers with llm.backend: openai and llm.cache.enabled: true",
            )
        self._warn_if_recorded_elsewhere(request)
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

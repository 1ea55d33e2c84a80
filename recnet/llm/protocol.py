"""The backend protocol: what every LLM backend and wrapper accepts and returns.

Pipeline position: the bottom of the LLM layer. ``structured.call_structured`` builds an
``LLMRequest`` from a prompt pack and hands it to an ``LLMBackend`` — a provider (OpenAI-compatible,
scripted, custom) possibly wrapped in retry, rate-limit, budget and cache layers (``factory``).
``request_key`` is the cache key: sha256 of the canonical JSON of everything that shapes the
answer (model, messages, sampling parameters, seed, output schema, prompt pack identity) and
nothing that does not (operation, agent, step, phase are metadata for traces and error messages).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion request. Frozen: wrappers derive new requests with ``replace``."""

    model: str
    messages: tuple[Message, ...]
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    response_schema: dict[str, Any] | None = None  # JSON schema of the expected answer
    schema_name: str = "output"
    # Prompt pack identity: part of the cache key (a new pack version is a new request).
    pack_name: str | None = None
    pack_version: str | None = None
    pack_hash: str | None = None
    # Metadata: traces and error messages only, NOT part of the cache key.
    operation: str = field(default="call", compare=False)
    agent_id: str | None = field(default=None, compare=False)
    step: int | None = field(default=None, compare=False)
    phase: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))

    def describe(self) -> str:
        """``<operation> of <agent>`` for error messages."""
        who = self.agent_id if self.agent_id is not None else "an unnamed agent"
        where = f" at step {self.step}" if self.step is not None else ""
        return f"{self.operation} of {who}{where}"


@dataclass(frozen=True)
class LLMResponse:
    """One answer. ``attempts`` counts network requests made for it (0 for a cache hit)."""

    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    model: str
    cache_hit: bool = False
    attempts: int = 1


@runtime_checkable
class LLMBackend(Protocol):
    """Anything that answers ``LLMRequest``s. Providers and wrappers both implement it."""

    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def aclose(self) -> None: ...


def canonical_request(request: LLMRequest) -> dict[str, Any]:
    """The fields that determine the answer, as plain JSON-able data."""
    return {
        "model": request.model,
        "messages": [dict(m) for m in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "response_schema": request.response_schema,
        "schema_name": request.schema_name if request.response_schema is not None else None,
        "pack": [request.pack_name, request.pack_version, request.pack_hash],
    }


def canonical_json(data: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(request: LLMRequest) -> str:
    """sha256 hex digest of the canonical request: the cache and trace key."""
    return hashlib.sha256(canonical_json(canonical_request(request)).encode("utf-8")).hexdigest()


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (~4 characters per token), used before the real count is known."""
    return max(1, (len(text) + 3) // 4)


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """Estimated prompt tokens of a message list (content plus a small per-message overhead)."""
    return sum(estimate_tokens(str(m.get("content", ""))) + 4 for m in messages)

"""Structured calls: render a pack template, ask the backend, parse, validate, repair or give up.

Pipeline position: the LLM brain's one entry point into the LLM layer. ``call_structured`` turns
(operation, variables) into a validated pydantic object:

1. render the pack's messages and send them with the output model's JSON schema;
2. parse the answer — tolerant of ```json fences and prose around the object (the first JSON
   object in the text is taken) — and validate it with the model, then with the optional
   ``validator`` callable (raise ``ValueError`` for semantic problems, e.g. an unknown candidate);
3. on failure, re-ask with the previous answer and the error appended, at most ``max_repairs``
   times; if it still fails, return ``ok=False`` so the caller keeps its previous state (the
   fallback). A bad *answer* never raises; backend errors (budget, replay miss, a server that
   stays down) do, after recording the attempt.

Every attempt yields one record for the trace's ``llm_calls`` table, passed to ``on_record``.
Records hold the messages and the answer — never an API key or an HTTP header.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from recnet.config.scenario import LLMSettings
from recnet.errors import RecnetError
from recnet.llm.pack import PromptPack
from recnet.llm.protocol import LLMBackend, LLMRequest, LLMResponse, request_key
from recnet.llm.stats import LLMStats

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

Record = dict[str, Any]
MAX_ERROR_CHARS = 1500


@dataclass(frozen=True)
class CallMeta:
    """Who asks, when, and with which sampling parameters."""

    model: str
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = None
    agent_id: str | None = None
    step: int = 0
    phase: str | None = None
    run_id: str | None = None

    @classmethod
    def from_settings(cls, settings: LLMSettings, **fields: Any) -> CallMeta:
        """Model and sampling parameters from ``llm``; the rest from ``fields``."""
        return cls(
            model=settings.model,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            **fields,
        )


@dataclass
class StructuredResult(Generic[T]):
    """The outcome of one structured call. ``ok=False`` means: keep the previous state."""

    ok: bool
    value: T | None
    raw: str | None  # the last answer text
    error: str | None  # the last parse/validation error
    calls: int  # backend calls made (1 + repairs)
    repairs: int
    records: list[Record] = field(default_factory=list)


class AnswerError(ValueError):
    """An answer that could not be parsed or validated; carries the raw text."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        first_newline = stripped.find("\n")
        body = stripped[first_newline + 1 :] if first_newline != -1 else ""
        end = body.rfind("```")
        return body[:end] if end != -1 else body
    return text


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (fences and surrounding prose tolerated)."""
    if not text or not text.strip():
        raise AnswerError("the answer was empty", text)
    decoder = json.JSONDecoder()
    for candidate in (_strip_fences(text), text):
        start = candidate.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                start = candidate.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value
            start = candidate.find("{", start + 1)
    raise AnswerError("the answer contains no JSON object", text)


def parse_answer(text: str, model: type[T], validator: Callable[[T], None] | None = None) -> T:
    """Parse and validate an answer; ``AnswerError`` with a readable message on failure."""
    data = extract_json_object(text)
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise AnswerError(f"the JSON does not match the schema: {details}", text) from None
    if validator is not None:
        try:
            validator(value)
        except (ValueError, TypeError) as exc:
            raise AnswerError(str(exc), text) from None
    return value


_SCHEMAS: dict[type[BaseModel], dict[str, Any]] = {}


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = _SCHEMAS.get(model)
    if schema is None:
        schema = _SCHEMAS[model] = model.model_json_schema()
    return schema


def _record(
    meta: CallMeta,
    pack: PromptPack,
    request: LLMRequest,
    response: LLMResponse | None,
    *,
    parsed_ok: bool,
    repairs: int,
    fallback: bool,
    error: str | None,
) -> Record:
    return {
        "run_id": meta.run_id,
        "step": meta.step,
        "phase": meta.phase,
        "operation": request.operation,
        "agent_id": meta.agent_id,
        "pack_name": pack.name,
        "pack_version": pack.version,
        "pack_hash": pack.hash,
        "model": response.model if response is not None else request.model,
        "request_key": request_key(request),
        "messages_json": json.dumps([dict(m) for m in request.messages], ensure_ascii=False),
        "raw_response": response.text if response is not None else None,
        "parsed_ok": parsed_ok,
        "tokens_in": response.tokens_in if response is not None else None,
        "tokens_out": response.tokens_out if response is not None else None,
        "latency_ms": response.latency_ms if response is not None else None,
        "cache_hit": bool(response.cache_hit) if response is not None else False,
        "attempts": response.attempts if response is not None else 0,
        "repairs": repairs,
        "fallback": fallback,
        "error": error,
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


async def call_structured(
    backend: LLMBackend,
    pack: PromptPack,
    operation: str,
    variables: Mapping[str, Any],
    output_model: type[T] | None = None,
    *,
    meta: CallMeta,
    max_repairs: int = 2,
    on_record: Callable[[Record], None] | None = None,
    validator: Callable[[T], None] | None = None,
    stats: LLMStats | None = None,
) -> StructuredResult[T]:
    """Run one typed LLM operation (see the module docstring). ``output_model`` defaults to the
    model the pack's manifest names for ``operation``."""
    model: type[T] = output_model or pack.output_model(operation)  # type: ignore[assignment]
    messages: list[dict[str, str]] = pack.render(operation, variables)
    records: list[Record] = []
    raw: str | None = None
    error: str | None = None

    def emit(
        request: LLMRequest,
        response: LLMResponse | None,
        repair: int,
        *,
        error: str | None = None,
        fallback: bool = False,
    ) -> None:
        record = _record(
            meta,
            pack,
            request,
            response,
            parsed_ok=error is None,
            repairs=repair,
            fallback=fallback,
            error=error,
        )
        records.append(record)
        if on_record is not None:
            on_record(record)

    for repair in range(max_repairs + 1):
        request = LLMRequest(
            model=meta.model,
            messages=tuple(messages),
            temperature=meta.temperature,
            max_tokens=meta.max_tokens,
            seed=meta.seed,
            response_schema=_schema_of(model),
            schema_name=operation,
            pack_name=pack.name,
            pack_version=pack.version,
            pack_hash=pack.hash,
            operation=operation,
            agent_id=meta.agent_id,
            step=meta.step,
            phase=meta.phase,
        )
        if repair and stats is not None:
            stats.repairs += 1
        try:
            response = await backend.complete(request)
        except RecnetError as exc:
            emit(request, None, repair, error=str(exc))
            raise
        raw = response.text
        try:
            value = parse_answer(raw, model, validator)
        except AnswerError as exc:
            error = str(exc)[:MAX_ERROR_CHARS]
            emit(request, response, repair, error=error, fallback=repair == max_repairs)
            messages = [
                *messages,
                {"role": "assistant", "content": raw},
                pack.repair_message(error),
            ]
            continue
        emit(request, response, repair)
        return StructuredResult(True, value, raw, None, repair + 1, repair, records)
    if stats is not None:
        stats.fallbacks += 1
    return StructuredResult(False, None, raw, error, max_repairs + 1, max_repairs, records)


async def run_concurrently(coros: Iterable[Awaitable[R]], limit: int) -> list[R]:
    """Await ``coros`` with at most ``limit`` running at once; results in input order.

    The first exception cancels the calls still pending and propagates.
    """
    if limit < 1:
        raise ValueError("limit must be >= 1")
    semaphore = asyncio.Semaphore(limit)
    pending = list(coros)

    async def bounded(coro: Awaitable[R]) -> R:
        async with semaphore:
            return await coro

    tasks = [asyncio.ensure_future(bounded(c)) for c in pending]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        if any(not t.done() for t in tasks):
            await asyncio.gather(*tasks, return_exceptions=True)
        # A task cancelled before its first step never runs ``bounded``, so the call it was
        # given was never started: close it, or Python reports "coroutine ... was never awaited".
        for coro in pending:
            if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == "CORO_CREATED":
                coro.close()

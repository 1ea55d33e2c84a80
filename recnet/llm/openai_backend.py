"""Provider for any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama, LM Studio).

Pipeline position: the innermost layer of the backend stack (``factory.build_backend`` wraps it
in retry, rate limit, budget and cache). The SDK's own retries are off (``max_retries=0``): the
retry wrapper owns that policy. SDK exceptions become ``RetryableError``/``FatalProviderError``.

Structured output (``llm.structured_output``):

- ``json_schema``: send ``response_format={"type": "json_schema", ...}`` (``strict: false``).
- ``json_text``: no response_format; the schema is appended to the system prompt.
- ``auto``: try ``json_schema``; when the server rejects it with a 400/422 that mentions
  response_format or json_schema, switch to ``json_text`` for the rest of the run (once; counted in
  ``LLMStats.format_fallbacks``) and resend the request.

The completion cap is sent as ``max_tokens`` (what vLLM, Ollama and LM Studio read); when a server
rejects that and asks for ``max_completion_tokens`` (newer OpenAI models), the backend switches to
it for the rest of the run and resends.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI

from recnet.config.scenario import LLMSettings
from recnet.llm.credentials import resolve_api_key
from recnet.llm.failures import (
    FatalProviderError,
    ProviderError,
    RetryableError,
    classify_status,
    parse_retry_after,
    redact,
)
from recnet.llm.protocol import LLMRequest, LLMResponse, Message, estimate_prompt_tokens
from recnet.llm.stats import LLMStats

log = logging.getLogger(__name__)

_FORMAT_HINTS = ("response_format", "json_schema", "structured output", "guided_json")

SCHEMA_INSTRUCTION = (
    "Answer with one JSON object and nothing else (no prose, no code fences). "
    "It must validate against this JSON schema:\n"
)


CHAT_PATH = "/chat/completions"


def parse_completion(raw: httpx2.Response, what: str) -> dict[str, Any]:
    """Text, usage and model of a chat completion body; ``FatalProviderError`` when unreadable."""
    try:
        data = json.loads(raw.content)
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        usage = data.get("usage") or {}
        model = data.get("model")
        if not isinstance(text, str) or not isinstance(usage, dict):
            raise TypeError("content must be a string and usage an object")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise FatalProviderError(
            f"the server's answer to {what} is not a chat completion ({type(exc).__name__}: "
            f"{exc}): {raw.text[:200]!r}",
            "check that llm.base_url is an OpenAI-compatible chat endpoint",
            kind="response",
        ) from None
    return {"text": text, "usage": usage, "model": model if isinstance(model, str) else None}


def with_schema_in_text(messages: tuple[Message, ...], schema: dict[str, Any]) -> list[Message]:
    """Append the JSON schema instruction to the system message (adding one if there is none)."""
    instruction = SCHEMA_INSTRUCTION + json.dumps(schema, ensure_ascii=False)
    out = [dict(m) for m in messages]
    for message in out:
        if message.get("role") == "system":
            message["content"] = f"{message.get('content', '')}\n\n{instruction}".lstrip()
            return out
    return [{"role": "system", "content": instruction}, *out]


def map_openai_error(exc: Exception, *, secret: str | None = None) -> ProviderError:
    """Translate an ``openai`` SDK exception into a recnet provider error (key redacted)."""
    message = redact(str(exc), secret)
    if isinstance(exc, openai.APITimeoutError):
        return RetryableError(
            f"request timed out: {message}",
            "raise llm.retry.timeout or lower llm.max_concurrency",
            kind="timeout",
        )
    if isinstance(exc, openai.APIConnectionError):
        return RetryableError(
            f"could not connect: {message}",
            "check llm.base_url and that the server is running",
            kind="connection",
        )
    if isinstance(exc, openai.APIStatusError):
        headers: Mapping[str, str] = exc.response.headers if exc.response is not None else {}
        return classify_status(
            exc.status_code, message, retry_after=parse_retry_after(dict(headers.items()))
        )
    return FatalProviderError(
        f"unreadable answer from the server: {message}",
        "check that llm.base_url is an OpenAI-compatible endpoint",
        kind="response",
    )


def _asks_for_completion_tokens(exc: openai.APIStatusError) -> bool:
    return exc.status_code == 400 and "max_completion_tokens" in str(exc)


def _mentions_response_format(exc: openai.APIStatusError) -> bool:
    text = f"{exc} {getattr(exc, 'param', '') or ''}".lower()
    return exc.status_code in (400, 422) and any(hint in text for hint in _FORMAT_HINTS)


class OpenAIBackend:
    """Chat completions through ``openai.AsyncOpenAI`` against ``settings.base_url``."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        stats: LLMStats | None = None,
        environ: Mapping[str, str] | None = None,
        client: AsyncOpenAI | None = None,
    ) -> None:
        self.settings = settings
        self.stats = stats if stats is not None else LLMStats()
        self.mode = settings.structured_output
        self._schema_rejected = False
        self._token_param = "max_tokens"
        self._secret = resolve_api_key(settings.api_key_env, settings.base_url, environ)
        self._client = client or AsyncOpenAI(
            api_key=self._secret,
            base_url=settings.base_url,
            max_retries=0,
            timeout=settings.retry.timeout,
        )

    @property
    def uses_json_schema(self) -> bool:
        """Whether requests with a schema are currently sent with ``response_format``."""
        return self.mode == "json_schema" or (self.mode == "auto" and not self._schema_rejected)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        attempts = 1
        while True:
            use_schema = request.response_schema is not None and self.uses_json_schema
            try:
                return await self._send(request, use_schema=use_schema, attempts=attempts)
            except openai.APIStatusError as exc:
                if use_schema and self.mode == "auto" and _mentions_response_format(exc):
                    if not self._schema_rejected:
                        self._schema_rejected = True
                        self.stats.format_fallbacks += 1
                        log.warning(
                            "%s rejected response_format json_schema; using JSON in text from now",
                            self.settings.base_url or "the server",
                        )
                    attempts += 1
                    continue
                if self._token_param == "max_tokens" and _asks_for_completion_tokens(exc):
                    self._token_param = "max_completion_tokens"
                    log.warning("the server wants max_completion_tokens; using it from now")
                    attempts += 1
                    continue
                error = map_openai_error(exc, secret=self._secret)
                if use_schema and _mentions_response_format(exc):
                    error.remedy = "set llm.structured_output: auto or json_text"
                raise error from None
            except openai.OpenAIError as exc:
                raise map_openai_error(exc, secret=self._secret) from None

    async def _send(self, request: LLMRequest, *, use_schema: bool, attempts: int) -> LLMResponse:
        messages: list[Message] = [dict(m) for m in request.messages]
        kwargs: dict[str, Any] = {}
        if request.response_schema is not None:
            if use_schema:
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": request.schema_name,
                        "schema": request.response_schema,
                        "strict": False,
                    },
                }
            else:
                messages = with_schema_in_text(request.messages, request.response_schema)
        if request.seed is not None:
            kwargs["seed"] = request.seed
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "temperature": request.temperature,
            self._token_param: request.max_tokens,
            **kwargs,
        }
        started = time.perf_counter()
        # The SDK's low-level post: same transport, auth, timeouts and status-error mapping as
        # ``chat.completions.create`` but no typed-model construction of the answer, which is most
        # of the SDK's per-call CPU (``experiments/bench_llm.py`` measures both).
        raw = await self._client.post(CHAT_PATH, cast_to=httpx2.Response, body=body)
        latency_ms = (time.perf_counter() - started) * 1000.0
        completion = parse_completion(raw, request.describe())
        text, usage = completion["text"], completion["usage"]
        tokens_in = usage.get("prompt_tokens") if usage else None
        tokens_out = usage.get("completion_tokens") if usage else None
        return LLMResponse(
            text=text,
            tokens_in=int(tokens_in if tokens_in is not None else estimate_prompt_tokens(messages)),
            tokens_out=int(tokens_out if tokens_out is not None else max(1, len(text) // 4)),
            latency_ms=latency_ms,
            model=completion["model"] or request.model,
            attempts=attempts,
        )

    async def aclose(self) -> None:
        await self._client.close()

"""Provider failures: the small set of errors every backend raises, and how SDK errors map to it.

Pipeline position: between providers and the retry wrapper. A provider turns whatever its SDK
raises into ``RetryableError`` (429, 5xx, timeouts, connection errors: worth another attempt,
optionally after ``retry_after`` seconds) or ``FatalProviderError`` (any other 4xx, malformed
replies: retrying cannot help). Both are ``BackendError``s, so the CLI prints them with a remedy.
Messages never include API keys: providers pass their key to ``redact``.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC, datetime

from recnet.errors import BackendError


class ProviderError(BackendError):
    """A provider call failed. ``status_code`` is the HTTP status when there was one."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        remedy: str | None = None,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        kind: str = "error",
    ) -> None:
        super().__init__(message, remedy)
        self.status_code = status_code
        self.retry_after = retry_after
        self.kind = kind  # rate_limit | server | timeout | connection | client | response


class RetryableError(ProviderError):
    """Transient: rate limited (429), server error (5xx), timeout or connection failure.

    A custom backend raises ``RetryableError.rate_limited(message, retry_after=seconds)`` for a
    rate limit (retried until ``llm.retry.rate_limit_deadline``) and ``RetryableError(message)``
    for any other transient failure (retried up to ``llm.retry.max_attempts`` attempts).
    """

    retryable = True

    @classmethod
    def rate_limited(
        cls, message: str, *, retry_after: float | None = None, remedy: str | None = None
    ) -> RetryableError:
        """A rate-limit failure (HTTP 429), optionally with the server's wait in seconds."""
        return cls(message, remedy, status_code=429, retry_after=retry_after, kind="rate_limit")

    @property
    def is_rate_limit(self) -> bool:
        """Whether the server asked to slow down (429) rather than failed."""
        return self.kind == "rate_limit" or self.status_code == 429


class FatalProviderError(ProviderError):
    """Not worth retrying: a 4xx other than 429, or an answer the SDK could not read."""

    retryable = False


# Where servers put the wait, most precise first. A LiteLLM proxy forwards the provider's
# headers with an ``llm_provider-`` prefix and does not always add a plain ``Retry-After``.
_WAIT_HEADER_PREFIXES = ("", "llm_provider-")


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: datetime | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), also
    under LiteLLM's ``llm_provider-`` prefix.

    Returns None when absent or unreadable; negative waits become 0.
    """
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for prefix in _WAIT_HEADER_PREFIXES:
        millis = lowered.get(f"{prefix}retry-after-ms")
        if millis is not None:
            try:
                value = float(millis) / 1000.0
                if math.isfinite(value):
                    return max(0.0, value)
            except ValueError:
                pass
        raw = lowered.get(f"{prefix}retry-after")
        if raw is not None:
            seconds = _parse_seconds_or_date(raw, now)
            if seconds is not None:
                return seconds
    return None


def _parse_seconds_or_date(raw: str, now: datetime | None) -> float | None:
    raw = raw.strip()
    try:
        value = float(raw)
        return max(0.0, value) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


def redact(text: str, secret: str | None) -> str:
    """Replace every occurrence of ``secret`` (an API key) in ``text``."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "***")
    return text


def classify_status(
    status: int, message: str, *, retry_after: float | None = None, remedy: str | None = None
) -> ProviderError:
    """Map an HTTP status to a retryable or fatal provider error."""
    if status == 429:
        return RetryableError(
            f"rate limited (HTTP 429): {message}",
            remedy or "lower llm.max_concurrency or set llm.rate_limit.requests_per_minute",
            status_code=status,
            retry_after=retry_after,
            kind="rate_limit",
        )
    if status >= 500 or status == 408:
        return RetryableError(
            f"server error (HTTP {status}): {message}",
            remedy or "the server failed; check that it is up and not overloaded",
            status_code=status,
            retry_after=retry_after,
            kind="server",
        )
    default_remedy = {
        401: "check the API key in the variable named by llm.api_key_env",
        403: "the key is not allowed to use this model or endpoint; check llm.model and the key",
        404: "check llm.model and llm.base_url (an OpenAI-compatible base URL usually ends in /v1)",
    }.get(status, "the server rejected the request; check llm.model, llm.base_url and options")
    return FatalProviderError(
        f"request rejected (HTTP {status}): {message}",
        remedy or default_remedy,
        status_code=status,
        retry_after=retry_after,
        kind="client",
    )

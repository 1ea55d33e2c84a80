"""Composition of a backend stack from ``LLMSettings``.

Pipeline position: called once by the composition root (CLI / ``RunContext`` builder). The stack,
innermost first: provider ← retry ← rate limit ← budget ← cache. The cache is outermost so a hit
costs nothing; the budget sits outside the rate limit so a call refused by the budget never
waits for a slot. ``llm.backend`` chooses the provider:

- ``openai``: ``OpenAIBackend`` (any OpenAI-compatible ``base_url``); with several servers
  (``base_url`` as a list, or ``endpoints``) an ``EndpointPool`` of them, each behind its own rate
  limit, takes the place of provider and rate limit;
- ``scripted``: ``ScriptedBackend.from_settings`` (``llm.options.answers`` / ``responder``);
- ``replay``: no provider — the cache alone, in replay mode (needs a cache path);
- ``package.module:Class`` or an entry-point name in ``recnet.backends``: a custom provider built
  as ``Class(settings, **llm.options)``;
- ``offline`` is not an LLM backend (the offline brain needs none): asking for one is an error.

The cache is used when ``llm.cache.enabled`` and a path is known (``cache_path`` argument, else
``llm.cache.path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recnet.config.scenario import LLMSettings, RateLimitSettings
from recnet.errors import BackendError
from recnet.llm.budget import BudgetedBackend
from recnet.llm.cache import CachingBackend
from recnet.llm.loader import build_custom_backend
from recnet.llm.pool import Endpoint, EndpointPool
from recnet.llm.protocol import LLMBackend
from recnet.llm.ratelimit import RateLimitedBackend
from recnet.llm.retry import RetryingBackend, Sleep
from recnet.llm.scripted import ScriptedBackend
from recnet.llm.stats import LLMStats


def build_provider(settings: LLMSettings, *, stats: LLMStats) -> LLMBackend:
    """The innermost backend named by ``settings.backend`` (not ``replay``/``offline``)."""
    name = settings.backend
    options = dict(settings.options)
    if name == "openai":
        from recnet.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(settings, stats=stats)
    if name == "scripted":
        return ScriptedBackend.from_settings(settings, **options)
    if name == "offline":
        raise BackendError(
            "llm.backend is 'offline': the offline brain makes no LLM calls",
            "use the offline brain directly, or set llm.backend to openai, replay, scripted or "
            "a custom 'package.module:Class'",
        )
    return build_custom_backend(name, settings, **options)


def build_pool(settings: LLMSettings, *, stats: LLMStats) -> EndpointPool:
    """One ``OpenAIBackend`` per server of ``settings.servers()``, each behind its own rate limit
    (the server's limits, else ``llm.rate_limit``), spread by least outstanding requests."""
    from recnet.llm.openai_backend import OpenAIBackend

    endpoints = []
    for server in settings.servers():
        limits = RateLimitSettings(
            requests_per_minute=server.requests_per_minute
            or settings.rate_limit.requests_per_minute,
            tokens_per_minute=server.tokens_per_minute or settings.rate_limit.tokens_per_minute,
        )
        one = settings.model_copy(update={"base_url": server.url, "endpoints": []})
        backend: LLMBackend = OpenAIBackend(one, stats=stats)
        if limits.requests_per_minute or limits.tokens_per_minute:
            backend = RateLimitedBackend(backend, limits)
        endpoints.append(Endpoint(server.url, backend, weight=server.weight))
    return EndpointPool(endpoints)


def build_backend(
    settings: LLMSettings,
    *,
    cache_path: Path | None = None,
    stats: LLMStats | None = None,
    rng: np.random.Generator | None = None,
    sleep: Sleep | None = None,
) -> LLMBackend:
    """The full stack for ``settings``. ``rng`` drives retry jitter; ``sleep`` is for tests."""
    stats = stats if stats is not None else LLMStats()
    path = cache_path if cache_path is not None else settings.cache.path
    if settings.backend == "replay":
        if path is None:
            raise BackendError(
                "llm.backend is 'replay' but no cache file is known",
                "set llm.cache.path to the recorded llm-cache.sqlite",
            )
        return CachingBackend(None, Path(path), mode="replay", stats=stats)
    fleet = settings.endpoints or isinstance(settings.base_url, list)
    if settings.backend == "openai" and fleet:
        backend: LLMBackend = build_pool(settings, stats=stats)
        backend = RetryingBackend(backend, settings.retry, stats=stats, sleep=sleep, rng=rng)
    else:
        backend = build_provider(settings, stats=stats)
        backend = RetryingBackend(backend, settings.retry, stats=stats, sleep=sleep, rng=rng)
        if settings.rate_limit.requests_per_minute or settings.rate_limit.tokens_per_minute:
            backend = RateLimitedBackend(backend, settings.rate_limit)
    backend = BudgetedBackend(backend, settings.budget, stats=stats, model=settings.model)
    if settings.cache.enabled and path is not None:
        backend = CachingBackend(backend, Path(path), mode="record", stats=stats)
    return backend

"""The LLM layer: backends, wrappers, structured calls, prompt packs and embeddings.

Pipeline position: below the LLM brain. The brain loads a prompt pack (``load_pack``), builds a
backend stack once (``build_backend``: provider ← retry ← rate limit ← budget ← cache) and runs
each typed operation with ``call_structured`` (batched per phase with ``run_concurrently``).
Nothing here knows about agents or the world.
"""

from recnet.llm.budget import BudgetedBackend
from recnet.llm.cache import CachingBackend
from recnet.llm.factory import build_backend, build_provider
from recnet.llm.failures import FatalProviderError, ProviderError, RetryableError
from recnet.llm.pack import PromptPack, load_pack
from recnet.llm.protocol import LLMBackend, LLMRequest, LLMResponse, request_key
from recnet.llm.ratelimit import RateLimitedBackend
from recnet.llm.retry import RetryingBackend
from recnet.llm.scripted import ScriptedBackend
from recnet.llm.stats import LLMStats
from recnet.llm.structured import CallMeta, StructuredResult, call_structured, run_concurrently

__all__ = [
    "BudgetedBackend",
    "CachingBackend",
    "CallMeta",
    "FatalProviderError",
    "LLMBackend",
    "LLMRequest",
    "LLMResponse",
    "LLMStats",
    "PromptPack",
    "ProviderError",
    "RateLimitedBackend",
    "RetryableError",
    "RetryingBackend",
    "ScriptedBackend",
    "StructuredResult",
    "build_backend",
    "build_provider",
    "call_structured",
    "load_pack",
    "request_key",
    "run_concurrently",
]

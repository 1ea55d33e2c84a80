"""Pydantic models of a scenario's ``llm`` block: backend, retries, rate limits, budget, cache.

Pipeline position: part of the scenario (``recnet.config.scenario.Scenario.llm``); read by the
LLM backend stack (``recnet.llm.factory``) and the LLM brain. Also home of ``Section``, the base
of every scenario block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from recnet.config.checks import (
    EnvName,
    NonEmpty,
    backend_name,
    non_negative_prices,
)


class Section(BaseModel):
    """Base for every scenario block: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RetrySettings(Section):
    """Retry wrapper (tenacity): 429, 5xx, timeouts and connection errors only."""

    max_attempts: int = Field(5, ge=1, description="Attempts per request, first included.")
    initial_wait: float = Field(0.5, ge=0.0, description="Seconds before the first retry.")
    max_wait: float = Field(30.0, ge=0.0, description="Cap on one backoff wait.")
    jitter: float = Field(0.5, ge=0.0, description="Random extra wait, seconds.")
    timeout: float = Field(60.0, gt=0.0, description="Per-request timeout, seconds.")


class RateLimitSettings(Section):
    """Proactive client-side rate limit."""

    requests_per_minute: float | None = Field(None, gt=0, description="None = unlimited.")
    tokens_per_minute: float | None = Field(None, gt=0, description="None = unlimited.")


class EndpointSettings(Section):
    """One server of an LLM fleet (``llm.endpoints``)."""

    url: NonEmpty = Field(description="OpenAI-compatible base URL of this server.")
    weight: float = Field(
        1.0, gt=0.0, description="Share of concurrent calls (in flight per weight)."
    )
    requests_per_minute: float | None = Field(
        None, gt=0, description="This server's limit; None = llm.rate_limit's."
    )
    tokens_per_minute: float | None = Field(
        None, gt=0, description="This server's limit; None = llm.rate_limit's."
    )


class BudgetSettings(Section):
    """Caps that stop the run cleanly (state saved, resumable)."""

    max_calls: int | None = Field(None, ge=0, description="Network calls (cache hits are free).")
    max_tokens: int | None = Field(None, ge=0, description="Prompt + completion tokens.")
    max_cost: float | None = Field(None, ge=0, description="US dollars, from the price table.")
    prices: Annotated[dict[str, tuple[float, float]], AfterValidator(non_negative_prices)] = Field(
        default_factory=dict,
        description="model → (USD per 1M input tokens, USD per 1M output tokens).",
    )


class CacheSettings(Section):
    """Record/replay cache of LLM answers (SQLite, key = sha256 of the canonical request)."""

    enabled: bool = Field(True, description="Record every answer and reuse identical requests.")
    path: Path | None = Field(
        None, description="Cache file; default: <run folder>/llm-cache.sqlite."
    )


class LLMSettings(Section):
    """The brain's backend. ``offline`` is the deterministic reference policy (no network)."""

    backend: Annotated[str, AfterValidator(backend_name)] = Field(
        "offline",
        description="offline | openai | replay | scripted | module:Class | an entry point name "
        "in the group recnet.backends.",
    )
    model: NonEmpty = Field("gpt-4o-mini", description="Model name sent to the backend.")
    base_url: NonEmpty | list[NonEmpty] | None = Field(
        None,
        description="OpenAI-compatible endpoint (vLLM, Ollama), or a list of them: calls are "
        "spread by least outstanding requests, each server with its own llm.rate_limit.",
    )
    endpoints: list[EndpointSettings] = Field(
        default_factory=list,
        description="Weighted endpoints with their own rate limits (instead of base_url): a "
        "list of {url, weight, requests_per_minute, tokens_per_minute}.",
    )
    api_key_env: EnvName = Field("OPENAI_API_KEY", description="Env var holding the API key.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int = Field(512, ge=1, description="Completion token cap per call.")
    structured_output: Literal["json_schema", "json_text", "auto"] = Field(
        "auto",
        description="json_schema response format, JSON in text, or auto (schema, then fall back).",
    )
    pack: NonEmpty = Field("default", description="Prompt pack: a name under agents/ or a folder.")
    max_concurrency: int = Field(8, ge=1, description="Concurrent calls within one phase.")
    max_repairs: int = Field(2, ge=0, description="Re-asks with the validation error.")
    fuse: list[Literal["choose_merge", "reflect"]] = Field(
        default_factory=lambda: ["choose_merge", "reflect"],
        description="Fused operations: choose_merge = the user's choice and the merge of its "
        "buffered messages in one call; reflect = user and item reflections of an interaction "
        "and the extraction of their attributes in one call. [] = the paper's separate "
        "operations (predict, merge, reflect_user, reflect_item, extract), for ablations.",
    )
    reflect_on: Literal["wrong", "always"] = Field(
        "wrong",
        description="When the LLM writes reflections: only after a wrong choice (a right one "
        "reinforces the weights numerically, as the offline brain does, and keeps the texts), "
        "or after every choice (the paper's reinforcement by prompt).",
    )
    batch_size: int = Field(
        16,
        ge=1,
        description="Independent small operations of one phase sent in one call: summarize of "
        "several routers, merge of several clients' buffers, extract of several profiles. "
        "Each agent's part is validated on its own and a failing part is re-asked alone. "
        "1 = one call per agent.",
    )
    max_profile_chars: int = Field(
        480,
        ge=40,
        description="Longest profile text (own, propagated, candidate item) put into a prompt; "
        "longer texts are cut with an ellipsis.",
    )
    max_message_chars: int = Field(
        200, ge=40, description="Longest router message text put into a merge prompt."
    )
    coalesce_messages: bool = Field(
        True,
        description="A merge prompt shows only the newest buffered message of each router (its "
        "later profile folds in the earlier ones); the older ones are dropped with rule "
        "'superseded'. false shows every buffered message.",
    )
    options: dict[str, object] = Field(
        default_factory=dict, description="Extra keyword arguments for a custom backend."
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)

    @model_validator(mode="after")
    def _one_way_to_name_servers(self) -> LLMSettings:
        if self.endpoints and self.base_url is not None:
            raise ValueError(
                "give either base_url or endpoints, not both (endpoints carry their own url)"
            )
        if isinstance(self.base_url, list) and not self.base_url:
            raise ValueError("base_url is an empty list: give one URL, several, or leave it out")
        return self

    def servers(self) -> list[EndpointSettings]:
        """Every server named by ``base_url`` (one or a list) or ``endpoints``; [] for none."""
        if self.endpoints:
            return list(self.endpoints)
        if isinstance(self.base_url, list):
            return [EndpointSettings(url=url) for url in self.base_url]
        return [EndpointSettings(url=self.base_url)] if self.base_url else []

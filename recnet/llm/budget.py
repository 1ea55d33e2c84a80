"""Budget wrapper: caps on network calls, tokens and cost; the accountant of the backend stack.

Pipeline position: inside the cache (provider ← retry ← rate limit ← budget ← cache), so cache
hits are free. Before a call it checks that the call *could* fit: calls made + calls in flight +
1, and tokens/cost used + reserved + this request's worst case (estimated prompt + ``max_tokens``)
must stay within the caps; otherwise it raises ``BudgetExceeded`` before anything is sent (the
token check relies on a ~4 characters/token prompt estimate, so it is exact up to that
estimate). After a call the real usage is added to ``LLMStats`` (calls, tokens_in, tokens_out,
cost). The limits are checked against the shared ``LLMStats``, so a resumed run that
restores its earlier counters keeps honouring the same totals.

Prices: US dollars per 1M input / output tokens. ``DEFAULT_PRICES`` lists a few hosted models
(list prices when written; check your provider's page) and ``llm.budget.prices`` overrides or
extends it. A model is looked up by exact name, then by the longest table key it starts with
(``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``). Unpriced models cost 0 unless ``max_cost`` is
set, which then requires a price.
"""

from __future__ import annotations

from collections.abc import Mapping

from recnet.config.scenario import BudgetSettings
from recnet.errors import BackendError, BudgetExceeded
from recnet.llm.protocol import LLMBackend, LLMRequest, LLMResponse, estimate_prompt_tokens
from recnet.llm.stats import LLMStats

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}

RESUME_HINT = "continue with `recnet simulate --resume <run.sqlite>`"


def find_price(model: str, table: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for ``model``, or None when unpriced."""
    if model in table:
        return table[model]
    prefixes = [key for key in table if model.startswith(key)]
    return table[max(prefixes, key=len)] if prefixes else None


class BudgetedBackend:
    """Stops cleanly (``BudgetExceeded``) before a call that could cross a cap."""

    def __init__(
        self,
        inner: LLMBackend,
        settings: BudgetSettings,
        *,
        stats: LLMStats | None = None,
        model: str | None = None,
    ) -> None:
        self.inner = inner
        self.settings = settings
        self.stats = stats if stats is not None else LLMStats()
        self.prices: dict[str, tuple[float, float]] = {**DEFAULT_PRICES, **settings.prices}
        if settings.max_cost is not None and model is not None and self.price(model) is None:
            raise BackendError(
                f"llm.budget.max_cost is set but model {model!r} has no price",
                f"add llm.budget.prices.{model}: [<USD per 1M input>, <USD per 1M output>]",
            )
        self._calls_in_flight = 0
        self._tokens_reserved = 0
        self._cost_reserved = 0.0

    def price(self, model: str) -> tuple[float, float] | None:
        return find_price(model, self.prices)

    def cost_of(self, model: str, tokens_in: int, tokens_out: int) -> float:
        price = self.price(model)
        if price is None:
            return 0.0
        return (tokens_in * price[0] + tokens_out * price[1]) / 1_000_000

    def _check(self, request: LLMRequest, tokens: int, cost: float) -> None:
        s, st = self.settings, self.stats
        if s.max_calls is not None and st.calls + self._calls_in_flight + 1 > s.max_calls:
            self._stop(f"{st.calls} calls made, llm.budget.max_calls = {s.max_calls}", "max_calls")
        used_tokens = st.tokens_in + st.tokens_out + self._tokens_reserved
        if s.max_tokens is not None and used_tokens + tokens > s.max_tokens:
            self._stop(
                f"{st.tokens_in + st.tokens_out:,} tokens used and the next call may need up to "
                f"{tokens:,}, llm.budget.max_tokens = {s.max_tokens:,}",
                "max_tokens",
            )
        if s.max_cost is not None:
            price = self.price(request.model)
            if price is None:
                raise BackendError(
                    f"llm.budget.max_cost is set but model {request.model!r} has no price",
                    f"add llm.budget.prices.{request.model}: [<USD per 1M in>, <USD per 1M out>]",
                )
            if st.cost + self._cost_reserved + cost > s.max_cost:
                self._stop(
                    f"${st.cost:.4f} spent and the next call may cost up to ${cost:.4f}, "
                    f"llm.budget.max_cost = ${s.max_cost:.4f}",
                    "max_cost",
                )

    def _stop(self, what: str, setting: str) -> None:
        limit = getattr(self.settings, setting)
        raise BudgetExceeded(
            f"LLM budget reached: {what}",
            f"the run stopped cleanly with its state saved; raise llm.budget.{setting} "
            f"(e.g. --set llm.budget.{setting}=<larger>) and {RESUME_HINT}",
            setting=setting,
            limit=limit,
        )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        prompt = estimate_prompt_tokens(request.messages)
        tokens = prompt + request.max_tokens
        cost = self.cost_of(request.model, prompt, request.max_tokens)
        self._check(request, tokens, cost)
        self._calls_in_flight += 1
        self._tokens_reserved += tokens
        self._cost_reserved += cost
        try:
            response = await self.inner.complete(request)
        finally:
            self._calls_in_flight -= 1
            self._tokens_reserved -= tokens
            self._cost_reserved -= cost
        st = self.stats
        st.calls += 1
        st.tokens_in += response.tokens_in
        st.tokens_out += response.tokens_out
        st.cost += self.cost_of(request.model, response.tokens_in, response.tokens_out)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

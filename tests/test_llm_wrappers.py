"""Rate limiter, budget, cache and custom backends, with a scripted provider and fake time."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from recnet.config.scenario import (
    BudgetSettings,
    LLMSettings,
    RateLimitSettings,
    RetrySettings,
)
from recnet.errors import BackendError, BudgetExceeded
from recnet.llm.budget import BudgetedBackend, find_price
from recnet.llm.cache import CachingBackend
from recnet.llm.factory import build_backend
from recnet.llm.failures import RetryableError
from recnet.llm.protocol import LLMRequest, LLMResponse, estimate_prompt_tokens
from recnet.llm.ratelimit import RateLimitedBackend, estimate_request_tokens
from recnet.llm.retry import RetryingBackend
from recnet.llm.scripted import ScriptedBackend
from recnet.llm.stats import LLMStats


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def req(text: str = "hello", *, max_tokens: int = 10, model: str = "m", **kw: object) -> LLMRequest:
    return LLMRequest(
        model=model,
        messages=({"role": "user", "content": text},),
        max_tokens=max_tokens,
        **kw,  # type: ignore[arg-type]
    )


async def test_request_rate_is_enforced() -> None:
    time = FakeTime()
    inner = ScriptedBackend(lambda r: "ok")
    limiter = RateLimitedBackend(
        inner, RateLimitSettings(requests_per_minute=60), clock=time.clock, sleep=time.sleep
    )
    started: list[float] = []

    async def one(i: int) -> LLMResponse:
        response = await limiter.complete(req(f"q{i}"))
        started.append(time.now)
        return response

    await asyncio.gather(*(one(i) for i in range(5)))
    # 60/min = 1/s with a one-request burst: the calls go at t = 0, 1, 2, 3, 4.
    assert sorted(started) == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert sum(time.sleeps) == pytest.approx(4.0)
    assert inner.calls == 5


async def test_token_rate_uses_estimate_then_real_usage() -> None:
    time = FakeTime()
    inner = ScriptedBackend(lambda r: "x" * 40)  # 10 completion tokens
    limiter = RateLimitedBackend(
        inner, RateLimitSettings(tokens_per_minute=6000), clock=time.clock, sleep=time.sleep
    )
    bucket = limiter._tokens
    assert bucket is not None and bucket.capacity == 100.0
    first = req("a" * 100, max_tokens=50)
    estimate = estimate_request_tokens(first)
    assert estimate == estimate_prompt_tokens(first.messages) + 50
    response = await limiter.complete(first)
    used = response.tokens_in + response.tokens_out
    assert used < estimate
    assert time.sleeps == []
    assert bucket.level == pytest.approx(100.0 - used)  # corrected from the estimate to usage
    second = req("b" * 100, max_tokens=50)
    await limiter.complete(second)
    # Waited until the second estimate fitted: (estimate - level) / (100 tokens per second).
    assert time.sleeps == [pytest.approx((estimate_request_tokens(second) - (100.0 - used)) / 100)]


async def test_request_larger_than_bucket_waits_for_full_bucket() -> None:
    time = FakeTime()
    limiter = RateLimitedBackend(
        ScriptedBackend(lambda r: "y"),
        RateLimitSettings(tokens_per_minute=600),  # 10 tokens/s, capacity 10
        clock=time.clock,
        sleep=time.sleep,
    )
    big = await limiter.complete(req("z" * 400, max_tokens=100))  # ~200 tokens: into debt
    assert time.sleeps == []  # a full bucket lets an oversized request through at once
    small = req("w", max_tokens=1)
    await limiter.complete(small)
    debt = big.tokens_in + big.tokens_out - 10.0
    assert time.sleeps == [pytest.approx((debt + estimate_request_tokens(small)) / 10.0)]


async def test_budget_stops_before_exceeding_calls() -> None:
    stats = LLMStats()
    inner = ScriptedBackend(lambda r: "ok")
    budget = BudgetedBackend(inner, BudgetSettings(max_calls=3), stats=stats)
    for i in range(3):
        await budget.complete(req(f"q{i}"))
    with pytest.raises(BudgetExceeded) as info:
        await budget.complete(req("q3"))
    assert inner.calls == 3 and stats.calls == 3
    message = str(info.value)
    assert "3 calls made" in message
    assert "recnet simulate --resume <run.sqlite>" in message
    assert "llm.budget.max_calls" in (info.value.remedy or "")


async def test_budget_counts_concurrent_calls_in_flight() -> None:
    stats = LLMStats()
    inner = ScriptedBackend(lambda r: "ok", latency=0.01)
    budget = BudgetedBackend(inner, BudgetSettings(max_calls=2), stats=stats)
    results = await asyncio.gather(
        *(budget.complete(req(f"q{i}")) for i in range(4)), return_exceptions=True
    )
    assert sum(isinstance(r, BudgetExceeded) for r in results) == 2
    assert inner.calls == 2 and stats.calls == 2


async def test_budget_tokens_and_cost() -> None:
    stats = LLMStats()
    inner = ScriptedBackend(lambda r: "x" * 400)  # 100 completion tokens
    settings = BudgetSettings(max_cost=0.001, prices={"m": (1.0, 2.0)})
    budget = BudgetedBackend(inner, settings, stats=stats, model="m")
    await budget.complete(req("q", max_tokens=100))
    assert stats.cost == pytest.approx((stats.tokens_in * 1.0 + stats.tokens_out * 2.0) / 1e6)
    with pytest.raises(BudgetExceeded, match="max_cost"):
        await budget.complete(req("q", max_tokens=1000))  # worst case 0.002 > what is left
    tokens = BudgetedBackend(inner, BudgetSettings(max_tokens=50), stats=LLMStats())
    with pytest.raises(BudgetExceeded, match="max_tokens"):
        await tokens.complete(req("q", max_tokens=60))
    assert inner.calls == 1


def test_budget_requires_price_for_cost_cap() -> None:
    with pytest.raises(BackendError) as info:
        BudgetedBackend(ScriptedBackend([]), BudgetSettings(max_cost=1.0), model="my-local-llm")
    assert "llm.budget.prices.my-local-llm" in (info.value.remedy or "")
    assert find_price("gpt-4o-mini-2024-07-18", {"gpt-4o": (1, 1), "gpt-4o-mini": (2, 2)}) == (2, 2)


async def test_cache_hits_are_free_after_budget_is_spent(tmp_path: Path) -> None:
    stats = LLMStats()
    inner = ScriptedBackend(lambda r: f"answer to {r.messages[0]['content']}")
    budget = BudgetedBackend(inner, BudgetSettings(max_calls=1), stats=stats)
    cache = CachingBackend(budget, tmp_path / "c.sqlite", stats=stats)
    first = await cache.complete(req("q"))
    again = await cache.complete(req("q", agent_id="u:9", step=4))  # metadata: same key
    assert again.cache_hit and again.text == first.text and again.attempts == 0
    with pytest.raises(BudgetExceeded):
        await cache.complete(req("other"))
    await cache.aclose()
    assert stats.calls == 1 and stats.cache_hits == 1 and inner.calls == 1


async def test_cache_persists_across_instances_and_replay_miss(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    recorder = CachingBackend(ScriptedBackend(["one", "two"]), path)
    await recorder.complete(req("a"))
    await recorder.complete(req("b"))
    assert recorder.size() == 2
    await recorder.aclose()
    replay = CachingBackend(None, path, mode="replay")
    assert (await replay.complete(req("b"))).text == "two"
    with pytest.raises(BackendError, match="replay cache miss for predict of u:7"):
        await replay.complete(req("c", operation="predict", agent_id="u:7"))
    await replay.aclose()
    with pytest.raises(BackendError, match="does not exist"):
        CachingBackend(None, tmp_path / "missing.sqlite", mode="replay")


async def test_retry_wrapper_counts_and_waits_with_fake_sleep() -> None:
    time = FakeTime()
    stats = LLMStats()
    inner = ScriptedBackend(
        [RetryableError("busy", retry_after=4.0), RetryableError("down"), "fine"]
    )
    retry = RetryingBackend(
        inner,
        RetrySettings(initial_wait=1.0, jitter=0.5, max_wait=30.0),
        stats=stats,
        sleep=time.sleep,
    )
    response = await retry.complete(req())
    assert response.text == "fine" and response.attempts == 3
    assert stats.retries == 2
    assert time.sleeps[0] == pytest.approx(4.0)  # Retry-After beats backoff 1.0 + jitter
    assert 2.0 <= time.sleeps[1] <= 2.5  # 1.0 * 2**1 plus jitter in [0, 0.5]
    assert time.sleeps == retry.waits


async def test_scripted_backend_runs_out_with_clear_error() -> None:
    backend = ScriptedBackend(["only"])
    await backend.complete(req())
    with pytest.raises(BackendError, match="ran out of answers"):
        await backend.complete(req())


CUSTOM_MODULE = textwrap.dedent(
    """
    from recnet.llm.protocol import LLMResponse

    class EchoBackend:
        def __init__(self, settings, *, prefix="echo"):
            self.prefix = prefix
            self.model = settings.model

        async def complete(self, request):
            text = self.prefix + ":" + request.messages[-1]["content"]
            return LLMResponse(text=text, tokens_in=1, tokens_out=1, latency_ms=0.0,
                               model=self.model)

        async def aclose(self):
            pass

    class NotABackend:
        def __init__(self, settings):
            pass
    """
)


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "recnet_test_custom_backend.py").write_text(CUSTOM_MODULE)
    dist = tmp_path / "recnet_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: recnet-test-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[recnet.backends]\necho = recnet_test_custom_backend:EchoBackend\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "recnet_test_custom_backend"


@pytest.mark.parametrize("spec", ["recnet_test_custom_backend:EchoBackend", "echo"])
async def test_custom_backend_by_path_and_entry_point(custom_module: str, spec: str) -> None:
    stats = LLMStats()
    settings = LLMSettings(backend=spec, model="mine", options={"prefix": "hey"})
    backend = build_backend(settings, stats=stats)
    response = await backend.complete(req("there"))
    await backend.aclose()
    assert response.text == "hey:there"
    assert stats.calls == 1  # wrapped in the standard stack


@pytest.mark.parametrize(
    ("spec", "options", "expected"),
    [
        ("no_such_module_xyz:Backend", {}, "cannot import module"),
        ("recnet_test_custom_backend:Missing", {}, "has no attribute"),
        ("recnet_test_custom_backend:NotABackend", {}, "must define"),
        ("recnet_test_custom_backend:EchoBackend", {"bogus": 1}, "could not construct"),
        ("not-registered-anywhere", {}, "unknown llm.backend"),
        ("offline", {}, "offline brain"),
    ],
)
def test_bad_custom_backend_errors(
    custom_module: str, spec: str, options: dict[str, object], expected: str
) -> None:
    with pytest.raises(BackendError) as info:
        build_backend(LLMSettings(backend=spec, options=options))
    assert expected in str(info.value)
    assert info.value.remedy


async def test_factory_scripted_with_cache_and_replay(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    stats = LLMStats()
    settings = LLMSettings(backend="scripted", options={"answers": ["A", "B"]})
    backend = build_backend(settings, cache_path=cache, stats=stats)
    assert isinstance(backend, CachingBackend)
    assert (await backend.complete(req("1"))).text == "A"
    assert (await backend.complete(req("1"))).text == "A"
    assert (await backend.complete(req("2"))).text == "B"
    await backend.aclose()
    assert stats.calls == 2 and stats.cache_hits == 1
    replay = build_backend(LLMSettings(backend="replay"), cache_path=cache)
    assert (await replay.complete(req("2"))).text == "B"
    await replay.aclose()
    with pytest.raises(BackendError, match="no cache file"):
        build_backend(LLMSettings(backend="replay"))
    disabled = build_backend(
        LLMSettings(backend="scripted", options={"answers": []}, cache={"enabled": False}),
        cache_path=cache,
    )
    assert not isinstance(disabled, CachingBackend)

"""``executor.blas_threads``: numpy's BLAS thread pool is limited while a run is open, and given
back when it ends (``recnet.exec.threads``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy  # noqa: F401  (loads the BLAS library threadpoolctl reports on)
import pytest
from threadpoolctl import threadpool_info

from recnet.config.scenario import Scenario
from recnet.exec.threads import AUTO_MAX_CLIENTS, BlasThreads
from recnet.runner import simulate


def blas_threads_now() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def tiny(tmp_path: Path, limit: int | str | None) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "blas",
            "seed": 1,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {"n_users": 20, "n_items": 40, "interactions_per_user": 6},
            },
            "world": {"n_routers": 2, "min_routers": 1},
            "executor": {"blas_threads": limit},
            "trace": {"path": str(tmp_path / f"run-{limit}.sqlite")},
        }
    )


@pytest.mark.parametrize("limit", [1, 3, None, "auto"])
def test_the_run_uses_the_scenarios_blas_thread_limit_and_gives_it_back(
    tmp_path: Path, limit: int | str | None
) -> None:
    before = blas_threads_now()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    seen: list[list[int]] = []
    result = asyncio.run(
        simulate(tiny(tmp_path, limit), on_step=lambda done, total: seen.append(blas_threads_now()))
    )
    assert result.n_steps > 0 and len(seen) == result.n_steps
    # auto: this 60-client world is small, so its steps run BLAS on one thread
    expected = before if limit is None else [1 if limit == "auto" else limit] * len(before)
    assert all(threads == expected for threads in seen)
    assert blas_threads_now() == before


def test_the_same_seed_gives_the_same_metrics_whatever_the_limit(tmp_path: Path) -> None:
    one = asyncio.run(simulate(tiny(tmp_path, 1)))
    default = asyncio.run(simulate(tiny(tmp_path, None)))
    assert one.metrics == default.metrics
    assert one.prequential is not None and default.prequential is not None
    assert one.prequential.overall == default.prequential.overall


def test_auto_limits_small_worlds_only_and_a_number_applies_at_once() -> None:
    before = blas_threads_now()
    with BlasThreads("auto") as blas:
        assert blas_threads_now() == before and blas.limit is None  # no world yet
        blas.fit(AUTO_MAX_CLIENTS)
        assert blas_threads_now() == before and blas.limit is None  # a large world keeps the pool
    with BlasThreads("auto") as blas:
        blas.fit(AUTO_MAX_CLIENTS - 1)
        assert blas_threads_now() == [1] * len(before) and blas.limit == 1
    assert blas_threads_now() == before
    with BlasThreads(3) as blas:
        assert blas_threads_now() == [3] * len(before) and blas.limit == 3
        blas.fit(10)  # a number is not refined by the world's size
        assert blas_threads_now() == [3] * len(before)
    assert blas_threads_now() == before


def test_the_scenario_accepts_auto_a_number_or_null_and_says_what_else(tmp_path: Path) -> None:
    for value in ("auto", 2, None):
        assert tiny(tmp_path, value).executor.blas_threads == value
    with pytest.raises(ValueError, match="blas_threads"):
        tiny(tmp_path, 0)
    with pytest.raises(ValueError, match="blas_threads"):
        tiny(tmp_path, "many")

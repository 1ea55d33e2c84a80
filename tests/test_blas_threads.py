"""``executor.blas_threads``: numpy's BLAS thread pool is limited while a run is open, and given
back when it ends (``recnet.exec.threads``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy  # noqa: F401  (loads the BLAS library threadpoolctl reports on)
import pytest
from threadpoolctl import threadpool_info

from recnet.config.scenario import Scenario
from recnet.runner import simulate


def blas_threads_now() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def tiny(tmp_path: Path, limit: int | None) -> Scenario:
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


@pytest.mark.parametrize("limit", [1, 3, None])
def test_the_run_uses_the_scenarios_blas_thread_limit_and_gives_it_back(
    tmp_path: Path, limit: int | None
) -> None:
    before = blas_threads_now()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    seen: list[list[int]] = []
    result = asyncio.run(
        simulate(tiny(tmp_path, limit), on_step=lambda done, total: seen.append(blas_threads_now()))
    )
    assert result.n_steps > 0 and len(seen) == result.n_steps
    expected = before if limit is None else [limit] * len(before)
    assert all(threads == expected for threads in seen)
    assert blas_threads_now() == before


def test_the_same_seed_gives_the_same_metrics_whatever_the_limit(tmp_path: Path) -> None:
    one = asyncio.run(simulate(tiny(tmp_path, 1)))
    default = asyncio.run(simulate(tiny(tmp_path, None)))
    assert one.metrics == default.metrics
    assert one.prequential is not None and default.prequential is not None
    assert one.prequential.overall == default.prequential.overall

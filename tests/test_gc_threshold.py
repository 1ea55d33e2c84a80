"""``executor.gc_threshold``: the cyclic garbage collector's young threshold is raised while a run
is open and given back when it ends (``recnet.exec.collector``)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from pydantic import ValidationError

from recnet.config.scenario import Scenario
from recnet.exec.collector import DEFAULT_THRESHOLD, relaxed_collector
from recnet.runner import simulate
from tests.test_blas_threads import tiny as blas_tiny


def tiny(tmp_path: Path, threshold: int | None) -> Scenario:
    """The small world of the BLAS-limit tests, with this collector threshold."""
    scenario = blas_tiny(tmp_path / str(threshold), None)
    (tmp_path / str(threshold)).mkdir()
    executor = scenario.executor.model_copy(update={"gc_threshold": threshold})
    return scenario.model_copy(update={"executor": executor})


@pytest.mark.parametrize("threshold", [DEFAULT_THRESHOLD, 5_000, None])
def test_the_run_uses_the_scenarios_threshold_and_gives_the_old_one_back(
    tmp_path: Path, threshold: int | None
) -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    result = asyncio.run(
        simulate(
            tiny(tmp_path, threshold), on_step=lambda done, total: seen.append(gc.get_threshold())
        )
    )
    assert result.n_steps > 0 and len(seen) == result.n_steps
    expected = before if threshold is None else (max(threshold, before[0]), *before[1:])
    assert set(seen) == {expected}
    assert gc.get_threshold() == before


def test_the_default_is_raised_and_a_higher_setting_is_kept() -> None:
    assert Scenario.model_validate({"name": "x"}).executor.gc_threshold == DEFAULT_THRESHOLD
    before = gc.get_threshold()
    try:
        gc.set_threshold(1_000_000, *before[1:])
        with relaxed_collector(10_000):
            assert gc.get_threshold()[0] == 1_000_000
        with relaxed_collector(None):
            assert gc.get_threshold()[0] == 1_000_000
        gc.set_threshold(*before)
        with pytest.raises(RuntimeError), relaxed_collector(before[0] + 1):
            assert gc.get_threshold()[0] == before[0] + 1
            raise RuntimeError("a run that fails")
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)


def test_the_same_seed_gives_the_same_results_whatever_the_threshold(tmp_path: Path) -> None:
    relaxed = asyncio.run(simulate(tiny(tmp_path, DEFAULT_THRESHOLD)))
    default = asyncio.run(simulate(tiny(tmp_path, None)))
    assert relaxed.metrics == default.metrics
    assert relaxed.prequential is not None and default.prequential is not None
    assert relaxed.prequential.overall == default.prequential.overall


def test_the_scenario_refuses_a_threshold_below_one() -> None:
    with pytest.raises(ValidationError, match="gc_threshold"):
        Scenario.model_validate({"name": "x", "executor": {"gc_threshold": 0}})

"""Named extension points: plug-ins from outside the package run from a scenario by name, and an
unknown name is an error that lists the known ones."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import extension_plugins
import pytest

from recnet.baselines import evaluate_scorer
from recnet.config.loader import validate_scenario
from recnet.errors import ScenarioError
from recnet.registry import BASELINES, DATASETS, FILTER_RULES, PERCEPTION, ROUTING, Registry
from recnet.runner import prepare, simulate

SMALL = {
    "name": "plugins",
    "seed": 5,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 30, "n_items": 60, "interactions_per_user": 8, "n_drifts": 1},
    },
    "world": {"n_routers": 4},
    "propagation": {"update_size": 10, "routing": "nearest_three"},
    "evaluation": {"n_negatives": 9, "baselines": ["least_popular", "popularity", "itemknn"]},
}


def test_a_routing_policy_and_a_baseline_from_the_test_folder_run_from_a_scenario(
    tmp_path: Path,
) -> None:
    scenario = validate_scenario({**SMALL, "trace": {"path": str(tmp_path / "run.sqlite")}})
    result = asyncio.run(simulate(scenario))
    assert {"least_popular", "popularity", "itemknn"} <= set(result.metrics)
    # the plug-in really scored the run's candidate lists: same numbers as scoring them directly
    prepared = prepare(scenario)
    direct = extension_plugins.LeastPopularScorer()
    direct.fit(prepared.split.train, list(prepared.dataset.items))
    expected, _ = evaluate_scorer(direct, prepared.split, prepared.test_candidates, [1, 5, 10])
    assert result.metrics["least_popular"] == pytest.approx(expected)
    assert result.metrics["least_popular"] != result.metrics["popularity"]
    db = sqlite3.connect(result.trace_path)
    per_send = db.execute(
        "SELECT step, router_id, COUNT(*) FROM messages GROUP BY step, router_id"
    ).fetchall()
    db.close()
    assert per_send, "the routers sent nothing"
    assert {count for _, _, count in per_send} == {extension_plugins.NEAREST}


def test_the_same_plug_ins_load_by_import_path(tmp_path: Path) -> None:
    raw = {
        **SMALL,
        "propagation": {"update_size": 10, "routing": "extension_plugins:nearest_three"},
        "evaluation": {"n_negatives": 9, "baselines": ["bprmf"]},
        "trace": {"path": str(tmp_path / "run.sqlite")},
    }
    result = asyncio.run(simulate(validate_scenario(raw)))
    assert "bprmf" in result.metrics
    db = sqlite3.connect(result.trace_path)
    counts = {c for (c,) in db.execute("SELECT COUNT(*) FROM messages GROUP BY step, router_id")}
    db.close()
    assert counts == {extension_plugins.NEAREST}


@pytest.mark.parametrize(
    ("key", "value", "known"),
    [
        ("evaluation.baselines", ["populrity"], "popularity"),
        ("propagation.routing", "nearest", "threshold"),
        ("propagation.perception", "psychic", "nearest_router"),
        ("dataset.kind", "netflix", "synthetic"),
    ],
)
def test_an_unknown_name_is_an_error_that_lists_the_known_ones(
    key: str, value: object, known: str
) -> None:
    section, option = key.split(".")
    raw = {**SMALL, section: {**SMALL.get(section, {}), option: value}}  # type: ignore[dict-item]
    with pytest.raises(ScenarioError) as caught:
        validate_scenario(raw)
    message = str(caught.value)
    assert key in message and known in message and "unknown" in message


def test_registries_list_built_ins_and_registered_names() -> None:
    assert BASELINES.builtin_names() == ["popularity", "random", "itemknn", "bprmf"]
    assert "least_popular" in BASELINES.names()
    assert DATASETS.builtin_names() == ["movielens", "recbole", "synthetic"]
    assert PERCEPTION.builtin_names() == ["nearest_router", "membership", "interaction_communities"]
    assert ROUTING.builtin_names() == ["threshold", "top_k", "members", "interaction_communities"]
    assert FILTER_RULES.builtin_names() == ["recency", "min_relevance", "conflict", "max_share"]
    with pytest.raises(ScenarioError, match=r"unknown x\.kind"):
        Registry("x.kind", "recnet.none").get("nothing")

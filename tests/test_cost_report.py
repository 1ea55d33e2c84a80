"""Cost in the open: the dry run's per-operation estimate, the measured table at the end of an LLM
run and ``recnet traces cost`` (LLM runs through the real openai client and the local server)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from llm_responder import FakeLLM
from llm_server import LLMTestServer
from typer.testing import CliRunner

from recnet.cli.app import app
from recnet.config.loader import apply_overrides, validate_scenario
from recnet.dry_run import dry_run_scenario, estimate
from recnet.runner import simulate

SMALL = {
    "seed": 5,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 24, "n_items": 60, "interactions_per_user": 8},
    },
    "world": {"n_routers": 4},
    "propagation": {"update_size": 12},
    "evaluation": {"n_negatives": 4},
}
TODAY = [
    "world.buffer.flush_on=[full,before_act,step_end]",
    "llm.fuse=[]",
    "llm.reflect_on=always",
    "llm.batch_size=1",
]


def dry(*overrides: str, tmp_path: Path):
    scenario = validate_scenario(apply_overrides(SMALL, list(overrides)))
    offline = dry_run_scenario(scenario)
    result = asyncio.run(simulate(offline, trace_path=tmp_path / f"d{len(overrides)}.sqlite"))
    return estimate(scenario, result), result


def test_dry_run_prices_the_llm_policy(tmp_path: Path) -> None:
    new, new_run = dry(tmp_path=tmp_path)
    old, old_run = dry(*TODAY, tmp_path=tmp_path)
    new_ops = {o.operation: o.calls for o in new.operations}
    old_ops = {o.operation: o.calls for o in old.operations}
    # the paper's policy: one call per operation, an extract per reflection, merge per flush
    assert old_ops["merge"] == old_run.operations["merge"]
    assert old_ops["predict"] == old_run.n_train
    assert (
        old_ops["extract"]
        == old_run.operations["reflect_user"] + old_run.operations["reflect_item"]
    )
    # the new policy: every interaction is one choice (fused with the merge when messages wait)
    assert new_ops.get("choose_merge", 0) + new_ops["predict"] == new_run.n_train
    assert new_ops.get("choose_merge", 0) > 0 and "extract" not in new_ops
    assert "reflect_user" not in new_ops and new_ops["reflect_fused"] < new_run.n_train
    assert new.calls < old.calls / 3 and new.tokens < old.tokens / 3
    assert all(o.prompt_tokens > 0 and o.output_tokens > 0 for o in new.operations)


def test_llm_run_prints_measured_cost_and_the_trace_gives_the_same(tmp_path: Path) -> None:
    scenario_file = tmp_path / "s.yaml"
    import yaml

    scenario_file.write_text(yaml.safe_dump(SMALL))
    trace = tmp_path / "run.sqlite"
    with LLMTestServer(FakeLLM()) as server:
        result = CliRunner().invoke(
            app,
            [
                "simulate",
                str(scenario_file),
                "--trace",
                str(trace),
                "--set",
                "llm.backend=openai",
                "--set",
                f"llm.base_url={server.base_url}",
                "--set",
                "llm.api_key_env=RECNET_COST_UNSET_KEY",
                "--set",
                "llm.budget.prices={test-model: [1.0, 2.0]}",
                "--set",
                "llm.model=test-model",
            ],
            env={"COLUMNS": "200"},
        )
        n_requests = server.count()
    assert result.exit_code == 0, result.output
    assert "Measured LLM use with test-model" in result.output
    assert "choose_merge" in result.output and "calls/interaction" in result.output
    db = sqlite3.connect(trace)
    n_train = db.execute("SELECT count(*) FROM interactions").fetchone()[0]
    wrong = db.execute("SELECT count(*) FROM interactions WHERE NOT correct").fetchone()[0]
    by_op = dict(db.execute("SELECT operation, count(*) FROM llm_calls GROUP BY operation"))
    # the policy, measured: one choice per interaction, one fused reflection per wrong choice
    assert by_op.get("choose_merge", 0) + by_op["predict"] == n_train
    assert by_op["reflect_fused"] == wrong
    assert sum(by_op.values()) == n_requests
    report = CliRunner().invoke(app, ["traces", "cost", str(trace)], env={"COLUMNS": "200"})
    assert report.exit_code == 0, report.output
    assert f"{sum(by_op.values()):,}" in report.output
    assert "reflect_fused" in report.output and "$" in report.output

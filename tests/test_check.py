"""``recnet check``: probes of a live OpenAI-compatible server (the local test server through the
real openai client): a good server, one that ignores response_format, one that rejects it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llm_responder import FakeLLM
from llm_server import LLMTestServer
from typer.testing import CliRunner

from recnet.check import PROBE_TOKEN, probe_operations, run_check
from recnet.cli.app import app
from recnet.config.loader import apply_overrides, validate_scenario

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "seed": 3,
    "dataset": {
        "kind": "synthetic",
        "synthetic": {"n_users": 20, "n_items": 40, "interactions_per_user": 6},
    },
    "world": {"n_routers": 3},
    "propagation": {"update_size": 10},
    "evaluation": {"n_negatives": 4},
}


def scenario_for(server: LLMTestServer, *overrides: str):
    return validate_scenario(
        apply_overrides(
            SMALL,
            [
                "llm.backend=openai",
                f"llm.base_url={server.base_url}",
                "llm.api_key_env=RECNET_CHECK_UNSET_KEY",
                "llm.model=test-model",
                *overrides,
            ],
        )
    )


def by_probe(report) -> dict[str, object]:
    return {row.probe: row for row in report.rows}


def test_a_good_server_passes_every_probe() -> None:
    with LLMTestServer(FakeLLM()) as server:
        report = asyncio.run(run_check(scenario_for(server)))
        seen = [r.body.get("response_format") for r in server.requests]
    rows = by_probe(report)
    assert report.ok and report.structured_output == "honoured"
    assert rows["structured output (json_schema)"].status == "ok"
    for operation in probe_operations(scenario_for(server)):
        row = rows[f"operation {operation}"]
        assert row.status == "ok", row.detail
        assert row.latency_ms is not None and row.tokens is not None and row.tokens[0] > 0
    # the probe's schema reached the server
    assert any(
        f and f["json_schema"]["schema"]["properties"]["token"]["enum"] == [PROBE_TOKEN]
        for f in seen
    )
    # the test server has no GET /models: a warning, not a failure
    assert rows["server reachable / model"].status == "warn"


def test_a_server_that_ignores_response_format_is_detected_with_the_fix() -> None:
    with LLMTestServer(FakeLLM(), ignores_response_format=True) as server:
        report = asyncio.run(run_check(scenario_for(server)))
    assert not report.ok and report.structured_output == "ignored"
    rows = [r for r in report.rows if r.probe.startswith("structured output")]
    assert rows[0].status == "fail" and "IGNORES" in rows[0].detail
    assert "llm.structured_output=json_text" in rows[0].detail
    assert rows[1].probe == "structured output (json_text)" and rows[1].status == "ok"
    # the operation probes then run with the schema in the prompt, and pass
    assert all(r.status == "ok" for r in report.rows if r.probe.startswith("operation"))


def test_a_server_that_rejects_json_schema_is_a_warning() -> None:
    with LLMTestServer(FakeLLM(), supports_json_schema=False) as server:
        report = asyncio.run(run_check(scenario_for(server)))
    assert report.ok and report.structured_output == "rejected"
    assert "json_text" in by_probe(report)["structured output (json_schema)"].detail


def test_an_unreachable_server_fails_at_once() -> None:
    with LLMTestServer(FakeLLM()) as server:
        scenario = scenario_for(server)
    report = asyncio.run(run_check(scenario))  # the server is gone
    assert not report.ok and len(report.rows) == 1
    assert "cannot connect" in report.rows[0].detail


def test_cli_prints_the_table_with_a_cost_estimate(tmp_path: Path) -> None:
    with LLMTestServer(FakeLLM(), ignores_response_format=True) as server:
        scenario = tmp_path / "s.yaml"
        scenario.write_text((ROOT / "scenarios" / "synthetic.yaml").read_text())
        result = CliRunner().invoke(
            app,
            [
                "check",
                str(scenario),
                "--quiet",
                "--set",
                "dataset.synthetic.n_users=20",
                "--set",
                "llm.backend=openai",
                "--set",
                f"llm.base_url={server.base_url}",
                "--set",
                "llm.api_key_env=RECNET_CHECK_UNSET_KEY",
            ],
            env={"COLUMNS": "200"},
        )
    assert result.exit_code == 1, result.output
    assert "IGNORES" in result.output and "json_text" in result.output
    assert "whole-run estimate" in result.output and "calls" in result.output

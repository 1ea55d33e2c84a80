"""Runs against a flaky server: do LLM runs complete when 8 % of calls get a 429 and 4 % a 500?

Pipeline position: an experiment, not part of the library. It starts the OpenAI-compatible test
server (``tests/llm_server.py``, in this process) answering with the fake LLM
(``tests/llm_responder.py``) and a seeded random fault mix (``FaultMix``: a share of 429s with
``Retry-After`` and a share of 500s, a different fault seed per run), then runs the LLM brain on a
small synthetic world through the real ``openai`` client with the scenario's default retry policy
(429s retried until ``llm.retry.rate_limit_deadline``, other failures up to ``max_attempts``).
It prints one line per run and the count of completed runs, and writes
``experiments/results/fault_mix/runs.json``.

    python experiments/fault_mix.py [--runs 10] [--rate-limit 0.08] [--server-error 0.04]
                                    [--retry-after 1.0] [--users 16] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_responder import FakeLLM  # noqa: E402
from llm_server import FaultMix, LLMTestServer  # noqa: E402

from recnet.config.scenario import Scenario  # noqa: E402
from recnet.errors import RecnetError  # noqa: E402
from recnet.runner import simulate  # noqa: E402


def scenario(base_url: str, seed: int, users: int, retry: dict[str, float]) -> Scenario:
    """A small synthetic world run by the LLM brain against ``base_url`` (no cache)."""
    return Scenario.model_validate(
        {
            "name": f"fault-mix-{seed}",
            "seed": seed,
            "dataset": {
                "kind": "synthetic",
                "synthetic": {
                    "n_users": users,
                    "n_items": 2 * users,
                    "n_communities": 3,
                    "interactions_per_user": 6,
                    "n_drifts": 0,
                },
            },
            "world": {"n_routers": 4},
            "propagation": {"update_size": 8, "max_recipients": 8},
            "evaluation": {"n_negatives": 5},
            "llm": {
                "backend": "openai",
                "model": "test-model",
                "base_url": base_url,
                "api_key_env": "RECNET_FAULT_MIX_UNSET_KEY",
                "max_concurrency": 8,
                "retry": retry,
                "cache": {"enabled": False},
            },
        }
    )


async def one_run(index: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    mix = FaultMix(args.rate_limit, args.server_error, args.retry_after, seed=1000 + index)
    retry: dict[str, float] = {}
    if args.smoke:  # keep the smoke test quick: short backoff (Retry-After is still honoured)
        retry = {"initial_wait": 0.01, "max_wait": 0.05, "jitter": 0.01}
    with LLMTestServer(FakeLLM(), fault_mix=mix) as server:
        started = time.perf_counter()
        row: dict[str, Any] = {"run": index, "fault_seed": mix.seed}
        try:
            result = await simulate(
                scenario(server.base_url, index, args.users, retry),
                trace_path=folder / f"run-{index}.sqlite",
            )
        except RecnetError as exc:
            row.update(completed=False, error=str(exc)[:300])
        else:
            stats = result.llm_stats
            assert stats is not None
            row.update(
                completed=True,
                calls=stats.calls,
                retries=stats.retries,
                fallbacks=stats.fallbacks,
                ndcg10=result.metrics["recnet"].get("ndcg@10"),
            )
        row["requests"] = server.count()
        row["faults"] = server.faults_served()
        row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rate-limit", type=float, default=0.08, help="Share of 429s.")
    parser.add_argument("--server-error", type=float, default=0.04, help="Share of 500s.")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After, seconds.")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="Short waits (for the test suite).")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "fault_mix")
    args = parser.parse_args(argv)
    if args.smoke:
        args.retry_after = min(args.retry_after, 0.02)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.runs):
            row = asyncio.run(one_run(index, args, Path(folder)))
            rows.append(row)
            print(json.dumps(row), flush=True)
    done = sum(row["completed"] for row in rows)
    print(
        f"completed {done} of {len(rows)} runs against {args.rate_limit:.0%} 429 "
        f"(Retry-After {args.retry_after:g} s) and {args.server_error:.0%} 500"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runs.json").write_text(json.dumps({"args": vars(args), "runs": rows}, default=str))
    return rows


if __name__ == "__main__":
    main()

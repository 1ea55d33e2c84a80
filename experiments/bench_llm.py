"""Throughput of the LLM backend stack under concurrency (the issue's target: >= 85 % at 32).

Pipeline position: an experiment, not part of the library. It starts the OpenAI-compatible test
server (``tests/llm_server.py``) in its own process with 100 ms added latency per answer, then
fires N structured calls (``call_structured`` → cache-less stack: budget ← rate limit ← retry ←
OpenAIBackend → real openai client) at concurrency 1, 8, 32 and 64. With 100 ms per answer the
ideal rate is concurrency / 0.1 s; the script prints the achieved rate next to it and writes the
figures to ``experiments/results/bench_llm.json``. For each level it also runs the bare openai
client with the same prompt (``raw_sdk_baseline``), which separates recnet's overhead from the
SDK's own per-call CPU cost (about 1.5-2 ms on a 2-core machine, the real ceiling at 64).

    python experiments/bench_llm.py [--latency 0.1] [--levels 1 8 32 64] [--repeats 3]
                                    [--rounds 30] [--in-process] [--skip-cost]
                                    [--skip-throughput] [--scenarios synthetic.yaml ...]
                                    [--backward]

It then measures LLM calls and tokens per training interaction of every shipped scenario (on a
seeded subsample, ``COST_SCENARIOS``), run by the LLM brain through the real openai client
against the local test server answered by the tests' deterministic fake LLM, twice: with the
settings before issue 10 (``TODAY``: merge at every step's end, the paper's separate
operations, one call per agent) and with the new defaults; propagation, buffers and filter
memories are on in both. ``--backward`` adds the backward phase's calls per round.

``--in-process`` runs the server in a thread of this process instead (it then competes with the
client for the GIL, which understates the client stack's throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from recnet.config.scenario import LLMSettings  # noqa: E402
from recnet.llm.factory import build_backend  # noqa: E402
from recnet.llm.pack import load_pack  # noqa: E402
from recnet.llm.stats import LLMStats  # noqa: E402
from recnet.llm.structured import CallMeta, call_structured, run_concurrently  # noqa: E402

ANSWER = json.dumps({"chosen": "i:1", "reasoning": "it fits"})


@contextmanager
def server_url(latency: float, in_process: bool) -> Iterator[str]:
    """Base URL of a running test server; stopped on exit."""
    if in_process:
        from llm_server import LLMTestServer

        with LLMTestServer(lambda _body: ANSWER, latency=latency) as server:
            yield server.base_url
        return
    command = [
        sys.executable,
        str(ROOT / "tests" / "llm_server.py"),
        "--latency",
        str(latency),
        "--answer",
        ANSWER,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("PORT "):
            raise RuntimeError(f"test server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def run_level(base_url: str, concurrency: int, n_calls: int) -> dict[str, Any]:
    settings = LLMSettings(
        backend="openai",
        model="bench-model",
        base_url=base_url,
        max_concurrency=concurrency,
        # Limits far above what is reached: the rate-limit wrapper is in the stack, not binding.
        rate_limit={"requests_per_minute": 1e9, "tokens_per_minute": 1e12},
        cache={"enabled": False},
    )
    stats = LLMStats()
    backend = build_backend(settings, stats=stats)
    pack = load_pack("default")

    def call(i: int) -> Any:
        variables = {
            "user_profile": f"user {i} likes crime films",
            "propagated_profile": "",
            "candidates": "i:1: Heat (1995)\ni:2: Toy Story (1995)",
        }
        meta = CallMeta.from_settings(settings, agent_id=f"u:{i}", step=0, phase="bench")
        return call_structured(backend, pack, "predict", variables, meta=meta, stats=stats)

    # Warm-up: open the connections once so the measurement is steady state.
    await run_concurrently([call(-i - 1) for i in range(concurrency)], concurrency)
    started, cpu = time.perf_counter(), time.process_time()
    results = await run_concurrently([call(i) for i in range(n_calls)], concurrency)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await backend.aclose()
    ok = sum(r.ok for r in results)
    return {"concurrency": concurrency, "calls": n_calls, "ok": ok, "seconds": elapsed, "cpu": cpu}


async def run_raw_sdk(base_url: str, concurrency: int, n_calls: int) -> dict[str, Any]:
    """Baseline: the bare openai client, same prompt size, no recnet layer at all."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="not-needed", base_url=base_url, max_retries=0, timeout=60.0)
    pack = load_pack("default")
    messages = pack.render(
        "predict",
        {
            "user_profile": "a user who likes crime films",
            "propagated_profile": "",
            "candidates": "i:1: Heat (1995)\ni:2: Toy Story (1995)",
        },
    )

    async def call() -> str | None:
        completion = await client.chat.completions.create(
            model="bench-model",
            messages=messages,
            max_tokens=512,  # type: ignore[arg-type]
        )
        return completion.choices[0].message.content

    await run_concurrently([call() for _ in range(concurrency)], concurrency)
    started, cpu = time.perf_counter(), time.process_time()
    answers = await run_concurrently([call() for _ in range(n_calls)], concurrency)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await client.close()
    ok = sum(a == ANSWER for a in answers)
    return {"concurrency": concurrency, "calls": n_calls, "ok": ok, "seconds": elapsed, "cpu": cpu}


async def main_async(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    report: dict[str, list[dict[str, Any]]] = {"stack": [], "raw_sdk": []}
    with server_url(args.latency, args.in_process) as base_url:
        for concurrency in args.levels:
            n_calls = max(args.min_calls, args.rounds * concurrency)
            for label, runner in (("stack", run_level), ("raw_sdk", run_raw_sdk)):
                runs = [await runner(base_url, concurrency, n_calls) for _ in range(args.repeats)]
                row = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # the median run
                row["repeats"] = args.repeats
                row["client_cpu_ms_per_call"] = row.pop("cpu") * 1000 / n_calls
                row["calls_per_s"] = row["calls"] / row["seconds"]
                row["limit_per_s"] = concurrency / args.latency
                row["ratio"] = row["calls_per_s"] / row["limit_per_s"]
                report[label].append(row)
                print(
                    f"{label:>7} concurrency {concurrency:>3}: {row['calls']:>4} calls in "
                    f"{row['seconds']:5.2f} s = {row['calls_per_s']:6.1f} calls/s; "
                    f"limit {row['limit_per_s']:5.0f}/s; ratio {row['ratio']:6.1%}; "
                    f"client CPU {row['client_cpu_ms_per_call']:.2f} ms/call",
                    flush=True,
                )
    return report


#: The settings before issue 10 (the paper's separate operations, merge at every step's end,
#: unbounded prompt texts): the "today" column of the cost table.
TODAY: tuple[str, ...] = (
    "world.buffer.flush_on=[full,before_act,step_end]",
    "llm.fuse=[]",
    "llm.reflect_on=always",
    "llm.batch_size=1",
    "llm.max_profile_chars=1200",
    "llm.max_message_chars=1200",
)

#: (scenario file, subsample overrides): every shipped scenario, small enough to run in minutes.
COST_SCENARIOS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("synthetic.yaml", ("dataset.synthetic.n_users=50",)),
    (
        "movielens.yaml",
        (
            "dataset.max_users=20",
            "dataset.max_interactions_per_user=20",
            "propagation.update_size=20",
        ),
    ),
    ("movielens-llm.yaml", ("dataset.max_users=20", "dataset.max_interactions_per_user=20")),
)


def scenario_llm_cost(
    scenario_name: str, extra: tuple[str, ...] = (), label: str = "new defaults"
) -> dict[str, Any]:
    """LLM calls and tokens per training interaction of a shipped scenario, measured.

    Runs ``scenarios/<scenario_name>`` with ``extra`` overrides with the LLM brain through the
    real openai client against the local test server, answered by the deterministic fake LLM of
    the tests, and counts what was sent (propagation, buffer and filter memory as the scenario
    has them: on in every shipped scenario).
    """
    import tempfile

    from llm_responder import FakeLLM
    from llm_server import LLMTestServer

    from recnet.config.loader import load_scenario
    from recnet.runner import simulate

    with LLMTestServer(FakeLLM()) as server, tempfile.TemporaryDirectory() as folder:
        scenario = load_scenario(
            ROOT / "scenarios" / scenario_name,
            [
                "llm.backend=openai",
                f"llm.base_url={server.base_url}",
                "llm.api_key_env=RECNET_BENCH_UNSET_KEY",
                "llm.max_concurrency=32",
                "llm.budget.max_calls=null",
                "llm.cache.enabled=false",
                *extra,
            ],
        )
        result = asyncio.run(simulate(scenario, trace_path=Path(folder) / "t.sqlite"))
    stats = result.llm_stats
    assert stats is not None
    counts = result.operation_counts
    assert counts is not None
    tokens = stats.tokens_in + stats.tokens_out  # type: ignore[attr-defined]
    rounds = result.stats.get("backward_rounds", 0)
    backward_calls = sum(result.operations.get(op, 0) for op in ("gradient", "optimize"))
    n = result.n_train
    return {
        "scenario": scenario_name,
        "settings": label,
        "overrides": list(extra),
        "backward_rounds": rounds,
        "backward_calls_per_round": backward_calls / rounds if rounds else None,
        "train_interactions": n,
        "steps": result.n_steps,
        "test_users": result.n_test_users,
        "llm_calls": stats.calls,  # type: ignore[attr-defined]
        "tokens": tokens,
        "calls_per_train_interaction": stats.calls / n,  # type: ignore[attr-defined]
        "tokens_per_train_interaction": tokens / n,
        "by_operation": {
            op: {
                "calls": calls,
                "prompt_tokens_per_call": counts.prompt_tokens.get(op, 0) / calls,
                "output_tokens_per_call": counts.output_tokens.get(op, 0) / calls,
                "calls_per_train_interaction": calls / n,
            }
            for op, calls in sorted(counts.counts.items())
        },
        "ndcg@10": result.metrics.get("recnet", {}).get("ndcg@10"),
        "seconds": result.seconds,
    }


def cost_table(costs: list[dict[str, Any]]) -> str:
    """Markdown: one row per scenario and settings, today's beside the new defaults."""
    lines = [
        "| scenario (subsample) | settings | train interactions | LLM calls | calls / interaction "
        "| tokens / interaction | NDCG@10 | calls by operation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in costs:
        ops = ", ".join(f"{op} {v['calls']}" for op, v in c["by_operation"].items())
        ndcg = "-" if c["ndcg@10"] is None else f"{c['ndcg@10']:.3f}"
        subsample = " ".join(o for o in c["overrides"] if o not in TODAY) or "(whole scenario)"
        lines.append(
            f"| {c['scenario']} {subsample} | {c['settings']} | "
            f"{c['train_interactions']} | {c['llm_calls']:,} | "
            f"{c['calls_per_train_interaction']:.2f} | {c['tokens_per_train_interaction']:,.0f} | "
            f"{ndcg} | {ops} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument(
        "--rounds",
        type=int,
        default=30,
        help="Calls per level = rounds x c. The first rounds after the warm-up still carry the "
        "start burst (all c requests leave at once); 30 rounds measure the steady state.",
    )
    parser.add_argument("--min-calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="Runs per level; the median.")
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/results/bench_llm.json")
    parser.add_argument(
        "--skip-cost", action="store_true", help="Only the throughput levels, no cost table."
    )
    parser.add_argument(
        "--skip-throughput",
        action="store_true",
        help="Only the cost table (LLM calls per "
        "training interaction of every shipped scenario, today's settings and the new ones).",
    )
    parser.add_argument(
        "--scenarios", nargs="*", default=None, help="Cost table for these scenario files only."
    )
    parser.add_argument(
        "--backward", action="store_true", help="Also the backward phase's cost per round."
    )
    parser.add_argument(
        "--full-synthetic",
        action="store_true",
        help="Also the whole shipped synthetic scenario with the new defaults (about 10k calls).",
    )
    args = parser.parse_args()
    rows = (
        asyncio.run(main_async(args)) if not args.skip_throughput else {"stack": [], "raw_sdk": []}
    )
    costs: list[dict[str, Any]] = []
    if not args.skip_cost:
        for name, subsample in COST_SCENARIOS:
            if args.scenarios and name not in args.scenarios:
                continue
            for label, settings in (("today", TODAY), ("new defaults", ())):
                costs.append(scenario_llm_cost(name, (*subsample, *settings), label))
                c = costs[-1]
                print(
                    f"{name} [{label}]: {c['llm_calls']:,} calls, "
                    f"{c['calls_per_train_interaction']:.2f} calls and "
                    f"{c['tokens_per_train_interaction']:,.0f} tokens per training interaction",
                    flush=True,
                )
        if args.full_synthetic:  # the shipped scenario itself (today's would take ~180k calls)
            costs.append(scenario_llm_cost("synthetic.yaml", (), "new defaults"))
        if args.backward:
            backward = ("backward.enabled=true", "backward.every=2")
            name, subsample = COST_SCENARIOS[2]
            costs.append(scenario_llm_cost(name, (*subsample, *backward), "with backward"))
        print(cost_table(costs), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "latency_s": args.latency,
        "server": "in-process thread" if args.in_process else "separate process",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1min_at_end": load,
        },
        "levels": rows["stack"],
        "raw_sdk_baseline": rows["raw_sdk"],
        "llm_cost_per_interaction": costs,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Benchmark: the full ml-latest-small run with the offline brain.

Pipeline position: outside the library; drives ``recnet.runner.simulate`` end to end (all ~100k
training interactions through the forward phase, 610 test users evaluated) and reports wall time,
peak memory (max RSS) and training interactions per second. Each configuration runs in its own
process so that peak memory is its own. The baselines measured in the same invocation are the same
run with propagation switched off (the AgentCF-style interaction loop alone) and with message
tracing off, so the cost of propagation and of the trace are visible.

    python experiments/bench_offline.py            # full scenario, ~2-4 minutes in total
    python experiments/bench_offline.py --smoke    # a 40-user subsample, seconds
    python experiments/bench_offline.py --baseline 4283dce   # also the code of that commit, first

``--baseline COMMIT`` checks the commit out as a git worktree in a temporary folder and runs the
main configuration with its code in the same invocation (before/after under the same load), then
says whether the metrics are identical.

Figures are printed and written to experiments/results/bench_offline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "movielens.yaml"
CONFIGURATIONS: dict[str, list[str]] = {
    "recnet (propagation on)": [],
    "baseline: propagation off": ["propagation.enabled=false"],
    "baseline: messages not traced": ["trace.messages=none"],
}
SMOKE = ["dataset.max_users=40", "propagation.update_size=100"]


def run_one(overrides: list[str]) -> dict[str, float]:
    """Run the scenario once in this process; return its figures."""
    from recnet.config import load_scenario
    from recnet.runner import simulate

    scenario = load_scenario(SCENARIO, overrides)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        cpu_started = time.process_time()
        result = asyncio.run(simulate(scenario, trace_path=Path(folder) / "bench.sqlite"))
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        trace_mb = (Path(folder) / "bench.sqlite").stat().st_size / 1e6
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "wall_seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # all threads (trace writer included)
        "load_average_1min": round(os.getloadavg()[0], 2),
        "peak_rss_mb": round(peak_mb, 1),
        "train_interactions": result.n_train,
        "interactions_per_second": round(result.n_train / seconds, 1),
        "steps": result.n_steps,
        "test_users": result.n_test_users,
        "trace_mb": round(trace_mb, 1),
        **{
            f"{model} {metric}": round(result.metrics[model][metric], 4)
            for model in ("recnet", "popularity")
            for metric in ("ndcg@1", "ndcg@5", "ndcg@10")
        },
    }


def report(name: str, row: dict[str, float]) -> None:
    """One configuration's line."""
    print(
        f"{name:32s} wall {row['wall_seconds']:7.2f} s  cpu {row['cpu_seconds']:7.2f} s  "
        f"(load {row['load_average_1min']:.1f})  peak {row['peak_rss_mb']:7.1f} MB  "
        f"{row['interactions_per_second']:9.1f} interactions/s  "
        f"trace {row['trace_mb']:6.1f} MB  NDCG@1/5/10 {row['recnet ndcg@1']:.4f} "
        f"{row['recnet ndcg@5']:.4f} {row['recnet ndcg@10']:.4f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a 40-user subsample (seconds)")
    parser.add_argument("--baseline", help="also run the code of this commit first (before/after)")
    parser.add_argument("--main-only", action="store_true", help="skip the baseline configurations")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # JSON list of overrides: child mode
    parser.add_argument(
        "--out", type=Path, default=ROOT / "experiments" / "results" / "bench_offline.json"
    )
    args = parser.parse_args()
    if args.single is not None:
        print(json.dumps(run_one(json.loads(args.single))))
        return
    extra = SMOKE if args.smoke else []
    figures: dict[str, dict[str, float]] = {}
    runs: list[tuple[str, list[str], Path]] = []
    folder = tempfile.mkdtemp()
    if args.baseline:
        code = Path(folder) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(code), args.baseline],
            check=True,
            capture_output=True,
        )
        runs.append((f"before: {args.baseline}", [], code))
    chosen = list(CONFIGURATIONS)[:1] if args.main_only else list(CONFIGURATIONS)
    runs += [(name, CONFIGURATIONS[name], ROOT) for name in chosen]
    try:
        for name, overrides, code_root in runs:
            child = subprocess.run(
                [sys.executable, __file__, "--single", json.dumps(overrides + extra)],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(code_root)},
            )
            figures[name] = json.loads(child.stdout.strip().splitlines()[-1])
            report(name, figures[name])
    finally:
        if args.baseline:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(code)],
                capture_output=True,
            )
    full = figures["recnet (propagation on)"]
    if args.baseline:
        before = figures[f"before: {args.baseline}"]
        same = all(before[k] == full[k] for k in full if " ndcg@" in k)
        print(
            f"speed-up over {args.baseline}: {before['wall_seconds'] / full['wall_seconds']:.2f}x; "
            f"metrics {'identical' if same else 'DIFFER'}"
        )
    print(
        "popularity on the same candidates: NDCG@1/5/10 "
        f"{full['popularity ndcg@1']:.4f} {full['popularity ndcg@5']:.4f} "
        f"{full['popularity ndcg@10']:.4f}"
    )
    off = figures.get("baseline: propagation off")
    print(
        f"train interactions: {full['train_interactions']}, steps: {full['steps']}, "
        f"test users: {full['test_users']}"
        + (f"; propagation costs {full['wall_seconds'] - off['wall_seconds']:.1f} s" if off else "")
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"smoke": args.smoke, "figures": figures}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

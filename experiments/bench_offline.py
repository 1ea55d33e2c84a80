"""Benchmark: the full ml-latest-small run with the offline brain.

Pipeline position: outside the library; drives ``recnet.runner.simulate`` end to end (all ~100k
training interactions through the forward phase, 610 test users evaluated) and reports wall time,
peak memory (max RSS) and training interactions per second. Each configuration runs in its own
process so that peak memory is its own. The baselines measured in the same invocation are the same
run with propagation switched off (the AgentCF-style interaction loop alone), with message
tracing off and with prequential evaluation off (the run as it was before test-then-train ranking
existed), so the cost of propagation, of the trace and of prequential evaluation are visible.

    python experiments/bench_offline.py            # full scenario, ~2-4 minutes in total
    python experiments/bench_offline.py --smoke    # a 40-user subsample, seconds
    python experiments/bench_offline.py --baseline 4283dce   # also the code of that commit, first

``--baseline COMMIT`` checks the commit out as a git worktree in a temporary folder and runs the
main configuration with its code in the same invocation (before/after under the same load), then
says whether the metrics are identical. ``--rounds N`` repeats every configuration N times in
alternating order (before, now, now, before, ...) and reports each round's difference and their
median: a shared machine's speed drifts by 10-20 % within minutes, more than many changes gain.
``--side-by-side`` runs them two at a time instead (before and now at once, one per core), so both
see the same machine speed; each is then slower than alone (shared memory bandwidth and caches).

Figures are printed and written to experiments/results/bench_offline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
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
    "baseline: prequential off": ["evaluation.prequential.every=0"],
    # the defaults before issue 9 (paper perception, τ multicast to everyone, merge at every
    # step's end, propagated weight 0.5, no prequential ranking): "before" in one invocation
    "before: previous defaults": [
        "propagation.perception=nearest_router",
        "propagation.routing=threshold",
        "propagation.message=profile",
        "propagation.message_idle_clients=true",
        "world.buffer.flush_on=[full, before_act, step_end]",
        "interaction.propagated_weight=0.5",
        "evaluation.prequential.every=0",
    ],
}
SMOKE = ["dataset.max_users=40", "propagation.update_size=100"]


def run_one(overrides: list[str], scenario_path: Path = SCENARIO) -> dict[str, float]:
    """Run the scenario once in this process; return its figures."""
    from recnet.config import load_scenario
    from recnet.runner import simulate

    scenario = load_scenario(scenario_path, overrides)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        cpu_started = time.process_time()
        result = asyncio.run(simulate(scenario, trace_path=Path(folder) / "bench.sqlite"))
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        trace_mb = (Path(folder) / "bench.sqlite").stat().st_size / 1e6
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    prequential = getattr(result, "prequential", None)  # None also before prequential existed
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
        "prequential ndcg@10": round(prequential.overall["ndcg@10"], 4)
        if prequential is not None
        else None,
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


def launch(overrides: list[str], code_root: Path) -> subprocess.Popen[str]:
    """One configuration in its own process, with the code and the scenario file under
    ``code_root`` (an earlier commit's code may not know a key the current scenario sets). The
    scenario's relative dataset path does not resolve from a worktree elsewhere, so the child is
    given the dataset this checkout's scenario finds."""
    scenario = code_root / SCENARIO.relative_to(ROOT)
    overrides = [*overrides, f"dataset.path={dataset_path()}"]
    return subprocess.Popen(
        [sys.executable, __file__, "--single", json.dumps(overrides), "--scenario", str(scenario)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(code_root)},
    )


def dataset_path() -> Path:
    """The dataset this checkout's scenario file names (resolved by the loader)."""
    from recnet.config import load_scenario

    return Path(load_scenario(SCENARIO).dataset.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a 40-user subsample (seconds)")
    parser.add_argument("--baseline", help="also run the code of this commit first (before/after)")
    parser.add_argument("--main-only", action="store_true", help="skip the baseline configurations")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every configuration this many times, alternating the order (default 1)",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="run the configurations two at a time, one per core (with --baseline --main-only: "
        "before and now at once, under the same machine speed)",
    )
    parser.add_argument("--single", help=argparse.SUPPRESS)  # JSON list of overrides: child mode
    parser.add_argument("--scenario", type=Path, default=SCENARIO, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "experiments" / "results" / "bench_offline.json"
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=list(CONFIGURATIONS),
        default=list(CONFIGURATIONS),
        help="which configurations to run (default: all)",
    )
    args = parser.parse_args()
    if args.single is not None:
        print(json.dumps(run_one(json.loads(args.single), args.scenario)))
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
    chosen = list(CONFIGURATIONS)[:1] if args.main_only else args.configs
    runs += [(name, CONFIGURATIONS[name], ROOT) for name in chosen]
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in runs}
    try:
        width = 2 if args.side_by_side else 1
        for round_ in range(max(args.rounds, 1)):
            order = runs if round_ % 2 == 0 else runs[::-1]
            for start in range(0, len(order), width):
                children = [
                    (name, launch(overrides + extra, code_root))
                    for name, overrides, code_root in order[start : start + width]
                ]
                for name, child in children:
                    out, err = child.communicate()
                    if child.returncode:
                        sys.stderr.write(err)  # the child's traceback says why
                        raise subprocess.CalledProcessError(child.returncode, child.args, out, err)
                    rounds[name].append(json.loads(out.strip().splitlines()[-1]))
                    report(name, rounds[name][-1])
        # each configuration's figures are those of its median-wall round
        for name, rows in rounds.items():
            figures[name] = sorted(rows, key=lambda row: row["wall_seconds"])[(len(rows) - 1) // 2]
    finally:
        if args.baseline:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(code)],
                capture_output=True,
            )
    full = figures.get("recnet (propagation on)")
    if full is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"smoke": args.smoke, "figures": figures}, indent=2))
        print(f"written to {args.out}")
        return
    for before_name in [n for n in figures if n.startswith("before: ")]:
        pairs = list(zip(rounds["recnet (propagation on)"], rounds[before_name], strict=True))
        same = all(b.get(k) == n[k] for n, b in pairs for k in n if " ndcg@" in k)
        walls = [n["wall_seconds"] - b["wall_seconds"] for n, b in pairs]
        cpus = [n["cpu_seconds"] - b["cpu_seconds"] for n, b in pairs]
        each = f" (rounds: {', '.join(f'{w:+.1f}' for w in walls)} s)" if len(pairs) > 1 else ""
        print(
            f"now vs {before_name[8:]}: {statistics.median(walls):+.1f} s wall, "
            f"{statistics.median(cpus):+.1f} s CPU{' (medians)' if each else ''}{each}; "
            f"metrics {'identical' if same else 'differ'}"
        )
    print(
        "popularity on the same candidates: NDCG@1/5/10 "
        f"{full['popularity ndcg@1']:.4f} {full['popularity ndcg@5']:.4f} "
        f"{full['popularity ndcg@10']:.4f}"
    )
    costs = [
        f"{label} costs {full['wall_seconds'] - figures[name]['wall_seconds']:.1f} s"
        for label, name in (
            ("propagation", "baseline: propagation off"),
            ("prequential evaluation", "baseline: prequential off"),
        )
        if name in figures
    ]
    print(
        f"train interactions: {full['train_interactions']}, steps: {full['steps']}, "
        f"test users: {full['test_users']}" + ("; " + ", ".join(costs) if costs else "")
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"smoke": args.smoke, "figures": figures, "rounds": rounds}, indent=2)
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

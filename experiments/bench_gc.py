"""Benchmark: time in Python's cyclic garbage collector, with and without ``executor.gc_threshold``.

Pipeline position: outside the library; runs ``recnet.runner.simulate`` twice on the same scenario,
once with the run's relaxed collector (the default threshold) and once with
``executor.gc_threshold=null`` (the interpreter's 700), each in its own process so peak RSS is its
own, side by side (one per core) so both see the same machine speed. Each child counts the
collector's passes and time per generation with ``gc.callbacks``. Results must be the same; the
script checks the metrics.

    python experiments/bench_gc.py                          # 30k agents of the synthetic world
    python experiments/bench_gc.py --agents 3000             # smaller (bench_scale's shape)
    python experiments/bench_gc.py --scenario scenarios/movielens.yaml --agents 0   # the main job
    python experiments/bench_gc.py --one-at-a-time           # sequential instead of side by side

Figures go to experiments/results/bench_gc.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"relaxed (default)": [], "Python's default (700)": ["executor.gc_threshold=null"]}


def run_one(scenario: str, agents: int | None, overrides: list[str]) -> dict[str, object]:
    """One run in this process: wall, collector passes and seconds per generation, peak RSS."""
    sys.path.insert(0, str(ROOT))
    from experiments.bench_scale import overrides_for
    from recnet.config.loader import load_scenario
    from recnet.runner import simulate

    spent = [0.0, 0.0, 0.0]
    passes = [0, 0, 0]
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[info["generation"]] += time.perf_counter() - started[0]
            passes[info["generation"]] += 1

    sized = overrides_for(agents) if agents else []
    loaded = load_scenario(ROOT / scenario, sized + overrides)
    gc.callbacks.append(timed)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(simulate(loaded, trace_path=Path(folder) / "t.sqlite"))
    wall = time.perf_counter() - began
    gc.callbacks.remove(timed)
    return {
        "wall_s": round(wall, 2),
        "gc_s": round(sum(spent), 2),
        "gc_share": round(sum(spent) / wall, 4),
        "passes_by_generation": passes,
        "seconds_by_generation": [round(s, 2) for s in spent],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "metrics": repr(sorted(result.metrics.items())),
    }


def launch(args: argparse.Namespace, overrides: list[str]) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--child", "--scenario", args.scenario]
    command += ["--agents", str(args.agents)]
    for override in overrides:
        command += ["--set", override]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def collect(process: subprocess.Popen[str]) -> dict[str, object]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a benchmark child failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="scenarios/synthetic.yaml")
    parser.add_argument(
        "--agents",
        type=int,
        default=30_000,
        help="synthetic world of this many users + items in bench_scale's shape (0: the "
        "scenario as it is)",
    )
    parser.add_argument("--one-at-a-time", action="store_true", help="not side by side")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override for both runs",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/results/bench_gc.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.scenario, args.agents or None, args.overrides)))
        return
    rows: dict[str, dict[str, object]] = {}
    if args.one_at_a_time:
        for label, overrides in SETTINGS.items():
            rows[label] = collect(launch(args, overrides))
    else:
        running = {label: launch(args, overrides) for label, overrides in SETTINGS.items()}
        rows = {label: collect(process) for label, process in running.items()}
    print(f"{args.scenario}" + (f", {args.agents:,} agents" if args.agents else ""))
    for label, row in rows.items():
        passes, seconds = row["passes_by_generation"], row["seconds_by_generation"]
        print(
            f"{label:24} wall {row['wall_s']:8.1f} s  collector {row['gc_s']:6.1f} s "
            f"({100 * float(row['gc_share']):4.1f} %)  passes young/middle/full {passes} "
            f"seconds {seconds}  peak {row['peak_rss_mb']:,.0f} MB"
        )
    relaxed, default = rows.values()
    same = relaxed.pop("metrics") == default.pop("metrics")
    print("metrics identical" if same else "METRICS DIFFER")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scenario": args.scenario, "agents": args.agents, **rows}))
    print(f"written to {args.out}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

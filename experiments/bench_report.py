"""Benchmark `recnet report` on the full MovieLens trace: wall and CPU seconds, HTML size.

    nice -n 10 python experiments/bench_report.py                # runs scenarios/movielens.yaml
    nice -n 10 python experiments/bench_report.py runs/x.sqlite  # or times an existing trace

Each repeat runs the real command (`python -m recnet.cli.app report TRACE -o OUT --agent u:1`)
in a fresh process, so Python start-up and imports are included; CPU seconds (user + system of
the child) are reported beside wall seconds because a shared machine's wall time depends on its
load. Then one in-process breakdown: reading the trace (SQL aggregates, checkpoint), charts and
page. The issue's targets: under 10 s, HTML under 5 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_movielens(folder: Path) -> Path:
    from recnet.config.loader import load_scenario
    from recnet.runner import simulate

    trace = folder / "movielens.sqlite"
    scenario = load_scenario(ROOT / "scenarios" / "movielens.yaml")
    started = time.perf_counter()
    asyncio.run(simulate(scenario, trace_path=trace))
    print(f"simulated scenarios/movielens.yaml in {time.perf_counter() - started:.1f} s")
    return trace


def time_command(trace: Path, out: Path, agent: str) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = ["report", str(trace), "-o", str(out), "--agent", agent]
    subprocess.run(
        [sys.executable, "-m", "recnet.cli.app", *command],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def breakdown(trace: Path, agent: str) -> dict[str, float]:
    from recnet.report import data, page

    started = time.perf_counter()
    runs = data.read_runs([trace], agent=agent)
    read = time.perf_counter()
    html = page.render(runs)
    done = time.perf_counter()
    return {"read trace": read - started, "charts + page": done - read, "bytes": len(html)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace", nargs="?", type=Path, help="a trace (default: run MovieLens)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--agent", default="u:1")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as folder:
        trace = args.trace or run_movielens(Path(folder))
        size_mb = trace.stat().st_size / 1e6
        print(f"trace {trace} ({size_mb:.0f} MB); load average {os.getloadavg()[0]:.1f}")
        out = Path(folder) / "report.html"
        print("repeat  wall s  cpu s")
        for repeat in range(args.repeats):
            wall, cpu = time_command(trace, out, args.agent)
            print(f"{repeat + 1:>6}  {wall:6.2f}  {cpu:5.2f}")
        print(f"html {out.stat().st_size / 1e6:.2f} MB")
        parts = breakdown(trace, args.agent)
        print(
            f"in process: read trace {parts['read trace']:.2f} s, "
            f"charts + page {parts['charts + page']:.2f} s"
        )


if __name__ == "__main__":
    main()

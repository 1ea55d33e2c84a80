"""Profile one synthetic-world size of ``bench_scale.py`` under cProfile.

Pipeline position: outside the library; runs ``recnet.runner.simulate`` on the bench_scale world of
``--agents`` agents (same shape, same overrides, plus any ``--set``) in this process under
cProfile, prints the top entries by cumulative time and writes the raw profile (``pstats``) and
the trace next to ``--out``.

    python experiments/profile_scale.py --agents 30000            # ~9 min under the profiler
    python experiments/profile_scale.py --agents 3000 --top 40
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.bench_scale import overrides_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=3000)
    parser.add_argument("--top", type=int, default=30, help="entries printed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "profile")
    args = parser.parse_args()

    from recnet.config import load_scenario
    from recnet.runner import simulate

    scenario = load_scenario(
        ROOT / "scenarios" / "synthetic.yaml", [*overrides_for(args.agents), *args.overrides]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"scale_{args.agents}"
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    result = asyncio.run(simulate(scenario, trace_path=stem.with_suffix(".sqlite")))
    profiler.disable()
    seconds = time.perf_counter() - started
    profiler.dump_stats(stem.with_suffix(".prof"))
    print(
        f"{args.agents:,} agents, {result.n_train:,} train interactions, {seconds:.1f} s profiled"
    )
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)
    print(f"written to {stem.with_suffix('.prof')}")


if __name__ == "__main__":
    main()

"""Profile one synthetic-world size of ``bench_scale.py`` under cProfile (time) or tracemalloc
(memory).

Pipeline position: outside the library; runs ``recnet.runner.simulate`` on the bench_scale world of
``--agents`` agents (same shape, same overrides, plus any ``--set``) in this process under
cProfile, prints the top entries by cumulative time and writes the raw profile (``pstats``) and
the trace next to ``--out``. With ``--memory`` it runs under tracemalloc instead and prints, at the
initial and at the final checkpoint, the Python memory per agent and the source lines that hold
the most of it (the per-agent memory tables of the issue-14 notes).

    python experiments/profile_scale.py --agents 30000            # ~9 min under the profiler
    python experiments/profile_scale.py --agents 3000 --top 40
    python experiments/profile_scale.py --agents 10000 --memory   # ~2 min
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
import tracemalloc
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
    parser.add_argument("--memory", action="store_true", help="tracemalloc instead of cProfile")
    args = parser.parse_args()

    from recnet.config import load_scenario
    from recnet.runner import simulate

    scenario = load_scenario(
        ROOT / "scenarios" / "synthetic.yaml", [*overrides_for(args.agents), *args.overrides]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"scale_{args.agents}"
    if args.memory:
        profile_memory(scenario, stem, args.agents, args.top)
        return
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


def profile_memory(scenario: object, stem: Path, agents: int, top: int) -> None:
    """Run under tracemalloc; report at the initial and the final checkpoint (the state after the
    build, and after the last step)."""
    import recnet.checkpoint as checkpoint
    from recnet.runner import simulate

    dump = checkpoint.dump

    def report_then_dump(state: checkpoint.Checkpoint) -> list[bytes]:
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.statistics("lineno")
        total = sum(s.size for s in stats)
        label = "after the build" if state.step < 0 else f"after step {state.step}"
        print(f"== {label}: {total / 1e6:.0f} MB traced, {total / agents:,.0f} B per agent")
        for stat in stats[:top]:
            frame = stat.traceback[0]
            where = frame.filename.replace(str(ROOT) + "/", "")
            print(f"{stat.size / 1e6:8.1f} MB {stat.count:9,d}  {where}:{frame.lineno}")
        return dump(state)

    checkpoint.dump = report_then_dump  # the runner calls it at every checkpoint
    tracemalloc.start()
    try:
        asyncio.run(
            simulate(scenario, trace_path=stem.with_suffix(".sqlite"))  # type: ignore[arg-type]
        )
    finally:
        tracemalloc.stop()
        checkpoint.dump = dump


if __name__ == "__main__":
    main()

"""What lazy merge (the LLM default) does to quality, measured with the offline brain.

Pipeline position: an experiment, not part of the library. Runs each shipped offline scenario
twice on the same seed — the offline default (buffers merge when full, before their owner acts and
at every step's end) and lazy merge (when full or before the owner acts: choosing, being judged
as a candidate, ranking or being ranked; never at a step's end) — and prints final test NDCG@10
and the number of merges of each, with the paired difference.

    python experiments/lazy_merge_quality.py [--seeds 0 1 2] [--scenarios synthetic.yaml ...]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from recnet.config.loader import load_scenario
from recnet.runner import simulate

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "every step's end (offline default)": ["world.buffer.flush_on=[full,before_act,step_end]"],
    "lazy (LLM default)": ["world.buffer.flush_on=[full,before_act]"],
}


def run(name: str, seed: int, overrides: list[str]) -> tuple[float, int]:
    scenario = load_scenario(ROOT / "scenarios" / name, [f"seed={seed}", *overrides])
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(simulate(scenario, trace_path=Path(folder) / "t.sqlite"))
    return result.metrics["recnet"]["ndcg@10"], result.operations.get("merge", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--scenarios", nargs="+", default=["synthetic.yaml", "movielens.yaml"])
    args = parser.parse_args()
    print("| scenario | seed | merge policy | NDCG@10 | merges | lazy - default |")
    print("|---|---|---|---|---|---|")
    for name in args.scenarios:
        for seed in args.seeds:
            values = {label: run(name, seed, o) for label, o in SETTINGS.items()}
            base = next(iter(values.values()))[0]
            for label, (ndcg, merges) in values.items():
                delta = "" if ndcg == base and label.startswith("every") else f"{ndcg - base:+.4f}"
                print(f"| {name} | {seed} | {label} | {ndcg:.4f} | {merges:,} | {delta} |")


if __name__ == "__main__":
    main()

"""Sanity-check the evaluation protocol with classic baselines on MovieLens ml-latest-small.

Pipeline position: an experiment on top of ``recnet.data.load`` → ``recnet.eval.protocol`` →
``recnet.baselines``. Leave-one-out by time, 1 true + 19 unseen negatives sampled per test user,
scorers fitted on the training interactions only (validation items held out too). Prints NDCG@K,
HR@K (K in 1, 5, 10) and MRR as mean ± std over seeds, with fit and scoring times, and writes one
row per (model, seed) to ``experiments/results/check_baselines.csv`` (git-ignored).

The design brief's reference (NDCG@10): random 0.21, popularity 0.63, ItemKNN 0.69, BPR-MF 0.72.

Usage: ``python experiments/check_baselines.py [--zip PATH] [--seeds 0 1 2] [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recnet.baselines import (
    BPRMFScorer,
    ItemKNNScorer,
    PopularityScorer,
    RandomScorer,
    Scorer,
    evaluate_scorer,
)
from recnet.config.scenario import DatasetSettings
from recnet.data.load import load_dataset
from recnet.eval.protocol import item_universe, sample_candidates, split_leave_one_out

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = ROOT.parent / "shared" / "datasets" / "ml-latest-small.zip"
RESULTS = ROOT / "experiments" / "results" / "check_baselines.csv"
KS = (1, 5, 10)
N_NEGATIVES = 19

FACTORIES: dict[str, Callable[[int], Scorer]] = {
    "random": lambda seed: RandomScorer(seed=seed),
    "popularity": lambda seed: PopularityScorer(),
    "itemknn": lambda seed: ItemKNNScorer(k=100, shrink=10.0),
    "bprmf": lambda seed: BPRMFScorer(factors=64, epochs=30, lr=0.05, reg=0.005, seed=seed),
}


def run(zip_path: Path, seeds: list[int], models: list[str]) -> list[dict[str, object]]:
    """Evaluate every model for every seed; one result row per (model, seed)."""
    t0 = time.perf_counter()
    dataset = load_dataset(DatasetSettings(kind="movielens", path=zip_path), seed=0)
    split = split_leave_one_out(dataset)
    items = item_universe(dataset)
    print(
        f"{dataset.name}: {len(dataset.users)} users, {len(items)} items, "
        f"{len(dataset.interactions)} interactions, {len(split.train)} for training "
        f"(load + split {time.perf_counter() - t0:.2f}s)"
    )
    rows: list[dict[str, object]] = []
    for seed in seeds:
        t = time.perf_counter()
        cands = sample_candidates(dataset, split, n_negatives=N_NEGATIVES, seed=seed)
        sample_s = time.perf_counter() - t
        for name in models:
            scorer = FACTORIES[name](seed)
            t = time.perf_counter()
            scorer.fit(split.train, items)
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            summary, _ = evaluate_scorer(scorer, split, cands, KS)
            score_s = time.perf_counter() - t
            rows.append(
                {"model": name, "seed": seed, **summary, "fit_s": fit_s, "score_s": score_s,
                 "sample_s": sample_s}
            )  # fmt: skip
            print(f"  seed {seed} {name:<10} ndcg@10={summary['ndcg@10']:.4f} fit {fit_s:.2f}s")
    return rows


def report(rows: list[dict[str, object]], models: list[str]) -> None:
    """Print mean ± std over seeds per model and metric."""
    metrics = [f"ndcg@{k}" for k in KS] + [f"hr@{k}" for k in KS] + ["mrr", "fit_s", "score_s"]
    print("\n" + f"{'model':<11}" + "".join(f"{m:>18}" for m in metrics))
    for name in models:
        mine = [r for r in rows if r["model"] == name]
        cells = []
        for m in metrics:
            vals = np.array([float(r[m]) for r in mine])  # type: ignore[arg-type]
            cells.append(f"{vals.mean():.4f} ± {vals.std(ddof=0):.4f}")
        print(f"{name:<11}" + "".join(f"{c:>18}" for c in cells))


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    """One row per (model, seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="ml-latest-small archive")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(FACTORIES), default=list(FACTORIES))
    args = parser.parse_args()
    rows = run(args.zip, args.seeds, args.only)
    report(rows, args.only)
    write_csv(rows, RESULTS)


if __name__ == "__main__":
    main()

"""Does propagation pay when a community's taste drifts? Prequential lift with its references.

Pipeline position: an experiment on top of ``experiments.harness`` (agent runs with their traces
kept) and the synthetic world's ground truth (``recnet.data.synthetic``: staggered adoption, who
adopted when, each user's true taste over time). No figure of the RecNet paper corresponds.

For each variant and seed, from the trace's ``prequential`` table (every training interaction's
true item ranked against the same seeded unseen items before it is learned, identical for every
variant of a seed):

* overall prequential NDCG@10 and the final leave-one-out NDCG@10;
* per drift, the adopters' prequential NDCG@10 in their first ``m`` interactions after the drift
  starts, and their time to adapt: how many of an adopter's own interactions after adopting pass
  before the model ranks the true item as well as the oracle does;
* two references on the same candidate lists: no propagation (AgentCF-style, lower) and an
  **oracle** that knows each user's true current taste and the generator's choice weights
  (upper: it ranks by the probability the generator gives each candidate);
* the lift over AgentCF-style as a paired mean with a 95 % t-interval, and as a share of the
  achievable gap (oracle − AgentCF-style).

``--sweep KEY=V1,V2,...`` repeats everything over one world setting (e.g. the share of adopting
members, ``dataset.synthetic.adopt_share=0,0.5,1``) and plots the lift against the share of
drifting users (``lift.png``).

Seeds 0-9 by default: a synthetic run takes seconds, and the final NDCG@10 of 200 test users varies
by ~0.03 from world to world, so three seeds cannot resolve a final lift of a few hundredths (with
2 degrees of freedom a t-interval excludes zero only for a mean above ~2.5 times its per-seed
spread; experiments/README.md, "How many seeds the final lift needs").

Outputs in ``experiments/results/<name>/``: ``drift.md``, ``runs.csv``, ``drifts.csv`` and, with
``--sweep``, ``lift.png``.

Usage::

    python experiments/drift.py                       # scenarios/synthetic.yaml, seeds 0-9
    python experiments/drift.py --sweep dataset.synthetic.adopt_share=0,0.5,1
    python experiments/drift.py --smoke               # seconds: tiny world, one seed
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from experiments.harness import (
    ALL_MODELS,
    RESULTS,
    SMOKE_SYNTHETIC,
    SYNTHETIC,
    DatasetSpec,
    Record,
    agent_job,
    connect_readonly,
    remove_trace,
    run_jobs,
)
from experiments.tables import aggregate, lift_text, markdown_table, paired_lift, pm, write_csv
from recnet.config.loader import load_scenario
from recnet.data.load import load_dataset
from recnet.data.types import GroundTruth
from recnet.eval.prequential import rank_with_ties_after

VARIANTS = ("agentcf", "recnet-no-backward", "recnet-full")
REFERENCE = "agentcf"
K = 10


def ndcg(ranks: np.ndarray) -> float:
    if ranks.size == 0:
        return math.nan
    return float(np.mean(np.where(ranks <= K, 1.0 / np.log2(ranks + 1.0), 0.0)))


def oracle_rank(
    truth: GroundTruth,
    user: str,
    timestamp: int,
    candidates: list[str],
    true_position: int,
    noise: float,
) -> int:
    """Rank of the truth when candidates are scored by the generator's choice probability for
    the user's true taste at that time (ties after earlier candidates, as for every model)."""
    taste = truth.taste_at(user, timestamp)
    scores = np.array(
        [
            (1.0 - noise) * truth.item_weight.get(i, 0.0)
            if truth.item_community.get(i) == taste
            else noise * 1e-6
            for i in (c[2:] for c in candidates)
        ]
    )
    return rank_with_ties_after(scores, true_position)


def prequential_rows(trace: Path) -> list[tuple[int, int, str, str, int, list[str], int]]:
    """``(seq, step, user, item, rank, candidates, timestamp)`` of a finished run's trace."""
    with connect_readonly(trace) as db:
        rows = db.execute(
            "SELECT p.seq, p.step, p.user_id, p.item_id, p.rank, p.candidates_json, i.timestamp "
            "FROM prequential p JOIN interactions i USING (run_id, seq) ORDER BY p.seq"
        ).fetchall()
    return [(s, st, u, it, r, json.loads(c), ts) for s, st, u, it, r, c, ts in rows]


def analyse(record: Record, truth: GroundTruth, noise: float, m: int) -> tuple[Record, list]:
    """Prequential figures of one run; the oracle's figures on the same lists as a second record."""
    rows = prequential_rows(Path(record["trace_path"]))
    ranks = np.array([r[4] for r in rows])
    oracle = np.array(
        [
            oracle_rank(truth, u[2:], ts, cands, cands.index(item), noise)
            for _, _, u, item, _, cands, ts in rows
        ]
    )
    by_user: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_user.setdefault(row[2][2:], []).append(index)
    drifts = []
    first_model, first_oracle, adapt = [], [], []
    for k, drift in enumerate(truth.drifts):
        model_ranks, oracle_ranks, delays = [], [], []
        for user in drift.users:
            adopted = drift.adopted_at(user)
            if adopted is None:
                continue
            after = [i for i in by_user.get(user, []) if rows[i][6] >= drift.timestamp][:m]
            model_ranks += [ranks[i] for i in after]
            oracle_ranks += [oracle[i] for i in after]
            own = [i for i in by_user.get(user, []) if rows[i][6] >= adopted]
            caught = next((n for n, i in enumerate(own) if ranks[i] <= oracle[i]), None)
            if own:
                delays.append(caught if caught is not None else len(own))
        first_model += model_ranks
        first_oracle += oracle_ranks
        adapt += delays
        drifts.append(
            {
                "drift": k,
                "community": drift.community,
                "adopters": sum(drift.adopted_at(u) is not None for u in drift.users),
                "first_m_ndcg@10": ndcg(np.array(model_ranks)),
                "oracle_first_m_ndcg@10": ndcg(np.array(oracle_ranks)),
                "interactions_to_adapt": float(np.mean(delays)) if delays else math.nan,
            }
        )
    drifting = {u for d in truth.drifts for u in d.users if d.adopted_at(u) is not None}
    users = {r[2][2:] for r in rows}
    figures = {
        "preq_ndcg@10": ndcg(ranks),
        "drift_first_m_ndcg@10": ndcg(np.array(first_model)),
        "interactions_to_adapt": float(np.mean(adapt)) if adapt else math.nan,
        "drifting_share": len(drifting & users) / max(len(users), 1),
    }
    oracle_figures = {
        "preq_ndcg@10": ndcg(oracle),
        "drift_first_m_ndcg@10": ndcg(np.array(first_oracle)),
        "interactions_to_adapt": 0.0,
    }
    return {**record, **figures}, [oracle_figures, drifts]


def run(args: argparse.Namespace) -> Path:
    spec: DatasetSpec = SMOKE_SYNTHETIC if args.smoke else SYNTHETIC
    seeds = [0] if args.smoke else args.seeds
    out: Path = args.out or RESULTS / args.name
    out.mkdir(parents=True, exist_ok=True)
    key, _, values = (args.sweep or "=").partition("=")
    points = [v for v in values.split(",") if v] or [None]
    jobs = []
    for point in points:
        extra = [*args.set, *([f"{key}={point}"] if point is not None else [])]
        tag = (("point", point),) if point is not None else ()
        suffix = f"__{point}" if point is not None else ""
        for variant in args.variants:
            for seed in seeds:
                jobs.append(
                    agent_job(
                        spec,
                        ALL_MODELS[variant],
                        seed,
                        out / "traces",
                        extra=extra,
                        keep_trace=True,
                        tags=tag,
                        suffix=suffix,
                    )
                )
    started = time.perf_counter()
    records = run_jobs(jobs, workers=args.workers)
    results: list[Record] = []
    drift_rows: list[Record] = []
    oracles: dict[tuple, Record] = {}
    for record, job in zip(records, jobs, strict=True):
        if record.get("status") != "ok":
            results.append(record)
            continue
        scenario = load_scenario(job.scenario, list(job.overrides))
        truth = load_dataset(scenario.dataset, scenario.seed).ground_truth
        assert truth is not None
        noise = scenario.dataset.synthetic.noise
        analysed, (oracle, drifts) = analyse(record, truth, noise, args.m)
        results.append(analysed)
        drift_rows += [
            {**d, "model": record["model"], "seed": record["seed"], "point": record.get("point")}
            for d in drifts
        ]
        oracles.setdefault(
            (record.get("point"), record["seed"]),
            {
                **{k: record.get(k) for k in ("dataset", "seed", "point")},
                "model": "oracle",
                "status": "ok",
                "ndcg@10": math.nan,
                **oracle,
            },
        )
        if not args.keep_traces:
            remove_trace(Path(record["trace_path"]))
    results += list(oracles.values())
    seconds = time.perf_counter() - started
    write_csv(results, out / "runs.csv")
    write_csv(drift_rows, out / "drifts.csv")
    report = out / "drift.md"
    report.write_text(render(results, points, args, seconds), encoding="utf-8")
    if args.sweep and len(points) > 1:
        plot_lift(results, points, key, out / "lift.png")
    print(report.read_text(encoding="utf-8"))
    return report


COLUMNS = ("preq_ndcg@10", "ndcg@10", "drift_first_m_ndcg@10", "interactions_to_adapt")


def render(
    results: list[Record], points: list[Any], args: argparse.Namespace, seconds: float
) -> str:
    lines = [
        "# Propagation under drift: prequential lift over AgentCF-style",
        "",
        f"- Command: `python experiments/drift.py {' '.join(sys.argv[1:])}`",
        f"- Wall-clock: {seconds:.0f} s with {args.workers} worker(s); seeds "
        f"{' '.join(map(str, args.seeds if not args.smoke else [0]))}; m = {args.m}",
        "- Lift = mean of per-seed differences against AgentCF-style (95 % t-interval); gap "
        "share = lift / (oracle − AgentCF-style) on the same candidate lists.",
        "",
    ]
    for point in points:
        mine = [r for r in results if r.get("point") == point]
        if point is not None:
            lines += [f"## {args.sweep.partition('=')[0]} = {point}", ""]
        rows = aggregate(mine, ("model",), [*COLUMNS, "drifting_share"])
        reference = next((r for r in rows if r["model"] == REFERENCE), None)
        oracle = next((r for r in rows if r["model"] == "oracle"), None)
        body = []
        for r in rows:
            label = ALL_MODELS[r["model"]].label if r["model"] in ALL_MODELS else "Oracle"
            cells = [label, r["n"], *[pm(r, c) for c in COLUMNS]]
            for column in ("preq_ndcg@10", "ndcg@10", "drift_first_m_ndcg@10"):
                if r["model"] in (REFERENCE, "oracle"):
                    cells.append("reference" if r["model"] == REFERENCE else "–")
                    continue
                lift = paired_lift(mine, r["model"], REFERENCE, column)
                text = lift_text(lift)
                if column != "ndcg@10" and reference and oracle:
                    gap = oracle[f"{column}_mean"] - reference[f"{column}_mean"]
                    text += f" ({lift[0] / gap:.0%} of gap)" if gap > 0 else ""
                cells.append(text)
            body.append(cells)
        headers = [
            "Model",
            "n",
            "preq NDCG@10",
            "final NDCG@10",
            "adopters' first m NDCG@10",
            "interactions to adapt",
            "lift preq",
            "lift final",
            "lift adopters first m",
        ]
        share = rows[0].get("drifting_share_mean") if rows else math.nan
        lines += [f"Share of drifting users: {share:.2f}", "", markdown_table(headers, body), ""]
        lines += gate_lines(mine)
    return "\n".join(lines)


def gate_lines(results: list[Record]) -> list[str]:
    """What the backward phase's validation gate did, when the run has RecNet full with and
    without it: rollbacks per seed and the paired difference, full minus gate off."""
    models = {r.get("model") for r in results}
    if not {"recnet-full", "recnet-no-gate"} <= models:
        return []
    rollbacks = " / ".join(
        f"{r['optimizations_rolled_back']}"
        for r in sorted(results, key=lambda r: str(r.get("seed")))
        if r.get("model") == "recnet-full" and r.get("status") == "ok"
    )
    lifts = [
        f"{name} {lift_text(paired_lift(results, 'recnet-full', 'recnet-no-gate', column))}"
        for name, column in (("prequential", "preq_ndcg@10"), ("final", "ndcg@10"))
    ]
    return [
        f"Validation gate: RecNet (full) rolled back {rollbacks} optimisations per seed; full "
        f"minus gate off, paired NDCG@10: {', '.join(lifts)}.",
        "",
    ]


def plot_lift(results: list[Record], points: list[Any], key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    models = [
        m for m in dict.fromkeys(r["model"] for r in results) if m not in (REFERENCE, "oracle")
    ]
    for model in [*models, "oracle"]:
        xs, ys, errs = [], [], []
        for point in points:
            mine = [r for r in results if r.get("point") == point]
            share = [r["drifting_share"] for r in mine if r.get("drifting_share") is not None]
            mean, low, high, n = paired_lift(mine, model, REFERENCE, "preq_ndcg@10")
            if n == 0 or not share:
                continue
            xs.append(float(np.mean(share)))
            ys.append(mean)
            errs.append(0.0 if math.isnan(low) else (high - low) / 2)
        label = ALL_MODELS[model].label if model in ALL_MODELS else "Oracle (upper)"
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"share of drifting users ({key})")
    ax.set_ylabel("prequential NDCG@10 lift over AgentCF-style")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=sorted(k for k, v in ALL_MODELS.items() if v.kind == "agent"),
    )
    parser.add_argument("--m", type=int, default=3, help="first m interactions after a drift")
    parser.add_argument("--sweep", help="KEY=V1,V2,... a world setting to sweep")
    parser.add_argument("--set", action="append", default=[], help="scenario override")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep-traces", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--name", default="drift")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.name = "drift-smoke" if args.name == "drift" else args.name
        args.variants = ["agentcf", "recnet-no-backward"]
    if REFERENCE not in args.variants:
        parser.error(f"--variants must include the reference {REFERENCE}")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()

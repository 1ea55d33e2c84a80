"""Propagation ground truth on the synthetic world: did updates reach whom they should, and when?

Pipeline position: an experiment on top of ``experiments.harness`` (runs with their traces kept)
and ``experiments.truth`` (scoring a trace against the planted ``GroundTruth``; the definitions of
"should receive", "carries the new attributes" and "time to reach" are in its docstring). No
figure of the RecNet paper corresponds (the paper has no ground truth); this checks the
mechanism the paper's claims rest on.

For each variant (RecNet routers with τ, top-k routing, point-to-point) and seed: micro-averaged
precision and recall of multicast recipients against the planted communities of the clients whose
change caused the update, the same for users only and for accepted messages, chance precision,
and per ``DriftEvent`` how quickly the drifting community received messages carrying its new
attributes (share reached within ``--window`` steps after vs before the drift, median delay,
steps until half were reached, share reached before their own first post-drift choice).

Outputs in ``experiments/results/<name>/``: ``propagation_truth.md``, ``multicast.csv``,
``drifts.csv``, ``reach_curve.csv`` and ``reach.png`` (per step around a drift, the share of the
drifting community's users receiving a message that carries its new attributes).

Usage::

    python experiments/propagation_truth.py            # scenarios/synthetic.yaml, seeds 0 1 2
    python experiments/propagation_truth.py --smoke    # seconds: tiny world, one seed
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from experiments.harness import (
    ALL_MODELS,
    RESULTS,
    SMOKE_SYNTHETIC,
    SYNTHETIC,
    Record,
    agent_job,
    remove_trace,
    run_jobs,
)
from experiments.plots import line_panels
from experiments.tables import aggregate, markdown_table, pm, write_csv
from experiments.truth import (
    drift_reach,
    load_trace,
    multicasts,
    precision_recall,
    world_from_dataset,
)
from recnet.config.loader import load_scenario
from recnet.data.load import load_dataset

VARIANTS = ("recnet-no-backward", "top-k-routing", "point-to-point")
CAST_COLUMNS = (
    "precision",
    "recall",
    "f1",
    "user_precision",
    "user_recall",
    "accepted_precision",
    "chance_precision",
    "recipients_per_multicast",
    "topic_purity",
    "ndcg@10",
)
DRIFT_COLUMNS = (
    "reached_before",
    "reached_after",
    "reached_ever",
    "median_delay_steps",
    "median_delay_days",
    "steps_to_half",
    "ahead_of_own_choice",
)


def analyse(
    record: Record, scenario_path: str, overrides: Sequence[str], window: int, carry_share: float
) -> tuple[Record, list[Record], list[np.ndarray]]:
    """Score one finished run (its trace is removed afterwards)."""
    scenario = load_scenario(scenario_path, list(overrides))
    world = world_from_dataset(load_dataset(scenario.dataset, scenario.seed))
    path = Path(record["trace_path"])
    trace = load_trace(path)
    casts = multicasts(trace, world, carry_share)
    cast_row = {**record, **precision_recall(casts, len(trace.clients))}
    drift_rows, curves = drift_reach(casts, trace, world, window)
    base = {"model": record["model"], "seed": record["seed"], "status": "ok", "note": ""}
    remove_trace(path)
    return cast_row, [{**base, **row} for row in drift_rows], curves


def report(
    casts: list[Record],
    drifts: list[Record],
    curves: dict[str, list[np.ndarray]],
    out: Path,
    *,
    window: int,
    carry_share: float,
    command: str,
    seconds: float,
) -> Path:
    cast_summary = aggregate(casts, ("model",), CAST_COLUMNS)
    drift_summary = aggregate(drifts, ("model",), DRIFT_COLUMNS)
    write_csv(casts, out / "multicast.csv")
    write_csv(drifts, out / "drifts.csv")
    label = {k: v.label for k, v in ALL_MODELS.items()}
    cast_headers = ["Variant", "n", "precision", "recall", "F1", "users: P", "users: R",
                    "accepted: P", "chance P", "recipients/multicast", "topic purity",
                    "NDCG@10", "note"]  # fmt: skip
    cast_body = [
        [label.get(r["model"], r["model"]), r["n"], pm(r, "precision", 3), pm(r, "recall", 3),
         pm(r, "f1", 3), pm(r, "user_precision", 3), pm(r, "user_recall", 3),
         pm(r, "accepted_precision", 3), pm(r, "chance_precision", 3),
         pm(r, "recipients_per_multicast", 1), pm(r, "topic_purity", 3), pm(r, "ndcg@10"),
         r["note"]]
        for r in cast_summary
    ]  # fmt: skip
    drift_headers = ["Variant", "drifts", "reached in W before", "reached in W after",
                     "reached ever", "median delay (steps)", "median delay (days)",
                     "steps to half", "ahead of own choice"]  # fmt: skip
    drift_body = [
        [label.get(r["model"], r["model"]), r["n"], pm(r, "reached_before", 3),
         pm(r, "reached_after", 3), pm(r, "reached_ever", 3), pm(r, "median_delay_steps", 1),
         pm(r, "median_delay_days", 1), pm(r, "steps_to_half", 1),
         pm(r, "ahead_of_own_choice", 3)]
        for r in drift_summary
    ]  # fmt: skip
    lines = [
        "# Propagation against the planted ground truth (synthetic world)",
        "",
        f"- Command: `{command}`",
        f"- Wall-clock: {seconds:.0f} s; window W = {window} steps; a message carries a drift's "
        f"new attributes when ≥ {carry_share:.0%} of its sender's community-mapped profile "
        "weight is on them.",
        "- Definitions: `experiments/truth.py` (module docstring). Mean ± sample std over seeds; "
        "precision/recall are micro-averaged over multicasts within a run.",
        "",
        "## Who received an update vs who should have",
        "",
        markdown_table(cast_headers, cast_body),
        "",
        "## Time to reach a drifting community (mean over drifts, ± std over drifts and seeds)",
        "",
        markdown_table(drift_headers, drift_body),
        "",
    ]
    path = out / "propagation_truth.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    xs = list(range(-window, window))
    series, curve_rows = [], []
    for model, members in curves.items():
        if members:
            stack = np.vstack(members)
            sd = stack.std(axis=0, ddof=1) if len(members) > 1 else np.zeros(len(xs))
            series.append((label.get(model, model), xs, stack.mean(axis=0), sd))
            curve_rows += [
                {"model": model, "steps_since_drift": x, "share_mean": m, "share_std": d}
                for x, m, d in zip(xs, stack.mean(axis=0).tolist(), sd.tolist(), strict=True)
            ]
    if curve_rows:
        write_csv(curve_rows, out / "reach_curve.csv")
    if series:
        line_panels(
            [
                {
                    "title": "Drifting community: share of its users receiving a message that "
                    "carries its new attributes (mean ± std over drifts and seeds)",
                    "xlabel": "steps since the drift",
                    "ylabel": "share of the community's users",
                    "series": series,
                    "band": True,
                    "clip": (0.0, 1.0),
                    "ymin": 0.0,
                }
            ],
            out / "reach.png",
            ncols=1,
            panel_size=(10.0, 4.5),
        )
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    agents = [k for k, v in ALL_MODELS.items() if v.kind == "agent"]
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=agents)
    parser.add_argument("--window", type=int, default=None, help="steps (default 40; smoke 5)")
    parser.add_argument("--carry-share", type=float, default=0.3)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="scenario override for every run")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="processes (at most 2)")
    parser.add_argument("--name", default=None, help="results sub-folder")
    parser.add_argument("--out", type=Path, default=None, help="results folder (overrides --name)")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic world, one seed")
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    if args.smoke and "--seeds" not in given:
        args.seeds = [0]
    if args.window is None:
        args.window = 5 if args.smoke else 40
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    started = time.perf_counter()
    spec = SMOKE_SYNTHETIC if args.smoke else SYNTHETIC
    out = args.out or RESULTS / (args.name or ("truth-smoke" if args.smoke else "truth"))
    out.mkdir(parents=True, exist_ok=True)
    # every message and every changed profile at every step (point-to-point senders' content)
    extra = [*args.overrides, "trace.messages=all", "trace.profile_every=1"]
    jobs = [
        agent_job(spec, ALL_MODELS[v], seed, out / "traces", extra=extra, keep_trace=True)
        for v in args.variants
        for seed in args.seeds
    ]
    print(f"{len(jobs)} runs, results in {out}", flush=True)
    records = run_jobs(jobs, workers=args.workers)
    casts, drifts = [], []
    curves: dict[str, list[np.ndarray]] = {v: [] for v in args.variants}
    for job, record in zip(jobs, records, strict=True):
        if record.get("status") != "ok":
            casts.append(record)
            continue
        cast, drift_rows, run_curves = analyse(
            record, job.scenario, job.overrides, args.window, args.carry_share
        )
        casts.append(cast)
        drifts.extend(drift_rows)
        curves[record["model"]].extend(run_curves)
    given = sys.argv[1:] if argv is None else list(argv)
    path = report(
        casts,
        drifts,
        curves,
        out,
        window=args.window,
        carry_share=args.carry_share,
        command=("python experiments/propagation_truth.py " + " ".join(given)).strip(),
        seconds=time.perf_counter() - started,
    )
    print(path.read_text(encoding="utf-8"))
    return out


if __name__ == "__main__":
    main()

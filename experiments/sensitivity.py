"""Sensitivity study: NDCG/HR of RecNet as τ, Updatesize and the number of routers K vary.

Pipeline position: an experiment on top of ``experiments.harness``. Reproduces the RecNet paper's
sensitivity figure (τ swept 0.7-0.9, Updatesize 10-30; best 0.8-0.85 and 20-25 there) and adds K
(``world.n_routers``, the paper's initial K is about 25).

τ is swept twice. The paper's grid (0.7-0.9) is for dense sentence embeddings; with recnet's
default hashing embedder cosines between a router and a client are much smaller (the default
τ is 0.35, see ``propagation.tau`` in ``recnet/config/scenario.py``), so the paper's grid mostly
measures "almost nobody receives anything". The second grid is centred on our default. Each τ
point also reports how many clients receive one multicast on average (from the trace's steps
table), which is what τ really controls.

Data: by default the paper-sized MovieLens subset — ``dataset.max_users=100`` (seeded, like
AgentCF/RecNet's 100-user subsets) with each user's most recent 50 interactions
(``dataset.max_interactions_per_user=50``), so that Updatesize 10 means ~400 steps rather than
10,000 on the full data. Base point: Updatesize 20, K 25, τ 0.35; one setting changes at a time.
The variant is RecNet w/o backward (``--set backward.enabled=true`` for the full method once the
backward phase exists). AgentCF-style (propagation off) runs once per seed as a reference line.

Outputs in ``experiments/results/<name>/``: ``sensitivity.md``, ``summary.csv``, ``runs.csv``,
``tau.png``, ``update_size.png``, ``routers.png``.

Usage::

    python experiments/sensitivity.py                  # MovieLens 100-user subset, seeds 0 1 2
    python experiments/sensitivity.py --dataset synthetic
    python experiments/sensitivity.py --smoke          # seconds: tiny synthetic world, one seed
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.harness import (
    ALL_MODELS,
    RESULTS,
    SCENARIOS,
    SMOKE_SYNTHETIC,
    SYNTHETIC,
    DatasetSpec,
    Job,
    Record,
    Variant,
    agent_job,
    run_jobs,
    safe,
)
from experiments.plots import line_panels
from experiments.tables import aggregate, markdown_table, pm, write_csv
from recnet.config.loader import load_scenario

SUBSET = DatasetSpec(
    "ml-latest-small-100u",
    SCENARIOS / "movielens.yaml",
    (
        "dataset.max_users=100",
        "dataset.max_interactions_per_user=50",
        "propagation.update_size=20",
        "world.n_routers=25",
    ),
)
COLUMNS = (
    "ndcg@1",
    "ndcg@5",
    "ndcg@10",
    "hr@1",
    "hr@5",
    "hr@10",
    "mrr",
    "recipients_per_multicast",
    "recipient_share",
    "acceptance",
    "llm_calls_per_inter",
    "tokens_per_inter",
    "n_steps",
    "seconds",
)


@dataclass(frozen=True)
class Sweep:
    """One swept setting: a scenario key and its grid."""

    name: str
    key: str
    values: tuple[float | int, ...]
    label: str


FULL_SWEEPS = (
    Sweep("tau-paper", "propagation.tau", (0.7, 0.75, 0.8, 0.85, 0.9), "τ (paper's grid)"),
    Sweep("tau-ours", "propagation.tau", (0.15, 0.25, 0.35, 0.45, 0.55), "τ (around our default)"),
    Sweep("update_size", "propagation.update_size", (10, 15, 20, 25, 30), "Updatesize"),
    Sweep("routers", "world.n_routers", (5, 10, 25, 40), "K (initial routers)"),
)
SMOKE_SWEEPS = (
    Sweep("tau-paper", "propagation.tau", (0.7, 0.9), "τ (paper's grid)"),
    Sweep("tau-ours", "propagation.tau", (0.35, 0.55), "τ (around our default)"),
    Sweep("update_size", "propagation.update_size", (50, 100), "Updatesize"),
    Sweep("routers", "world.n_routers", (2, 4), "K (initial routers)"),
)


def with_base_point(
    spec: DatasetSpec, sweeps: Sequence[Sweep], extra: Sequence[str]
) -> DatasetSpec:
    """``spec`` with every swept key pinned to the scenario's own value, so that the base point
    shared by several sweeps is one run (e.g. τ 0.35 in the τ grid is Updatesize 20 and K 25)."""
    scenario = load_scenario(spec.scenario, [*spec.overrides, *extra])
    pinned = []
    for key in dict.fromkeys(s.key for s in sweeps):
        node: object = scenario
        for part in key.split("."):
            node = getattr(node, part)
        pinned.append(f"{key}={node}")
    return DatasetSpec(spec.key, spec.scenario, (*spec.overrides, *pinned))


def merged(base: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    """Overrides with later keys replacing earlier ones, in a canonical (sorted) order."""
    out: dict[str, str] = {}
    for item in (*base, *extra):
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return tuple(f"{k}={v}" for k, v in sorted(out.items()))


def build_jobs(
    spec: DatasetSpec,
    sweeps: Sequence[Sweep],
    seeds: Sequence[int],
    variant: Variant,
    extra: Sequence[str],
    trace_dir: Path,
) -> tuple[list[Job], dict[tuple[str, float, int], int]]:
    """Unique jobs (a base point shared by several sweeps runs once) and, per (sweep, value,
    seed), the index of its job. The AgentCF reference has sweep name ``reference``."""
    jobs: list[Job] = []
    index: dict[tuple[tuple[str, ...], str, int], int] = {}
    points: dict[tuple[str, float, int], int] = {}

    def add(sweep: str, value: float, seed: int, model: Variant, setting: Sequence[str]) -> None:
        overrides = merged((*spec.overrides, *extra), setting)
        key = (overrides, model.key, seed)
        if key not in index:
            index[key] = len(jobs)
            point = DatasetSpec(spec.key, spec.scenario, overrides)
            suffix = "__" + safe(",".join(setting)) if setting else ""
            tags = (("setting", ",".join(setting)),)
            jobs.append(agent_job(point, model, seed, trace_dir, tags=tags, suffix=suffix))
        points[(sweep, value, seed)] = index[key]

    for seed in seeds:
        add("reference", 0.0, seed, ALL_MODELS["agentcf"], ())
        for sweep in sweeps:
            for value in sweep.values:
                add(sweep.name, value, seed, variant, (f"{sweep.key}={value}",))
    return jobs, points


def point_records(records: list[Record], points: dict[tuple[str, float, int], int]) -> list[Record]:
    """One record per (sweep, value, seed), copied from its (possibly shared) job's record."""
    out = []
    for (sweep, value, seed), k in points.items():
        out.append({"sweep": sweep, "value": value, **records[k], "seed": seed})
    return out


def report(
    rows: list[Record],
    sweeps: Sequence[Sweep],
    out: Path,
    *,
    title: str,
    command: str,
    seconds: float,
) -> Path:
    by = {(r["sweep"], r["value"]): r for r in rows}
    reference = by.get(("reference", 0.0))
    lines = [
        f"# Sensitivity study — {title}",
        "",
        f"- Command: `{command}`",
        f"- Wall-clock: {seconds:.0f} s",
        "- One setting varies at a time around the base point; mean ± sample std over seeds.",
        "- recipients/multicast: clients (users and items) that receive one router multicast, "
        "mean over multicasts; share = that / all clients.",
        "",
    ]
    if reference is not None:
        lines += [
            f"AgentCF-style reference (no propagation): NDCG@5 {pm(reference, 'ndcg@5')}, "
            f"NDCG@10 {pm(reference, 'ndcg@10')}, HR@10 {pm(reference, 'hr@10')}.",
            "",
        ]
    headers = ["value", "n", "NDCG@5", "NDCG@10", "HR@10", "MRR", "recipients/multicast",
               "share", "acceptance", "steps", "s/run", "note"]  # fmt: skip
    for sweep in sweeps:
        lines += [f"## {sweep.label} — `{sweep.key}`", ""]
        body = []
        for value in sweep.values:
            r = by[(sweep.name, value)]
            body.append(
                [value, r["n"], pm(r, "ndcg@5"), pm(r, "ndcg@10"), pm(r, "hr@10"), pm(r, "mrr"),
                 pm(r, "recipients_per_multicast", 1), pm(r, "recipient_share", 3),
                 pm(r, "acceptance", 3), pm(r, "n_steps", 0), pm(r, "seconds", 1), r["note"]]
            )  # fmt: skip
        lines += [markdown_table(headers, body), ""]
    path = out / "sensitivity.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    plot(by, sweeps, out, reference)
    return path


def _series(by: dict, sweep: Sweep, column: str) -> tuple[list, list, list]:
    rows = [by[(sweep.name, v)] for v in sweep.values]
    return (
        list(sweep.values),
        [r[f"{column}_mean"] for r in rows],
        [r[f"{column}_std"] for r in rows],
    )


def plot(by: dict, sweeps: Sequence[Sweep], out: Path, reference: Record | None) -> list[Path]:
    hlines = [] if reference is None else [("AgentCF NDCG@10", reference["ndcg@10_mean"])]
    named = {s.name: s for s in sweeps}
    figures = {
        "tau": [named[n] for n in ("tau-paper", "tau-ours") if n in named],
        "update_size": [named[n] for n in ("update_size",) if n in named],
        "routers": [named[n] for n in ("routers",) if n in named],
    }
    paths = []
    for name, members in figures.items():
        panels = []
        for sweep in members:
            panels.append(
                {
                    "title": f"Accuracy vs {sweep.label}",
                    "xlabel": sweep.label,
                    "ylabel": "metric",
                    "series": [
                        (m.upper(), *_series(by, sweep, m)) for m in ("ndcg@5", "ndcg@10", "hr@5")
                    ],
                    "hlines": hlines,
                }
            )
            panels.append(
                {
                    "title": f"Reach vs {sweep.label}",
                    "xlabel": sweep.label,
                    "ylabel": "share of clients per multicast",
                    "series": [("recipient share", *_series(by, sweep, "recipient_share"))],
                    "ymin": 0.0,
                }
            )
        if panels:
            paths.append(line_panels(panels, out / f"{name}.png"))
    return paths


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["movielens", "synthetic"], default="movielens",
                        help="movielens = the 100-user subset (default); synthetic = the full "
                        "synthetic scenario")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sweeps", nargs="+", choices=[s.name for s in FULL_SWEEPS],
                        default=[s.name for s in FULL_SWEEPS])  # fmt: skip
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
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.smoke:
        spec, sweeps = SMOKE_SYNTHETIC, SMOKE_SWEEPS
        default_name = "sensitivity-smoke"
    else:
        spec = SUBSET if args.dataset == "movielens" else SYNTHETIC
        sweeps = FULL_SWEEPS
        default_name = f"sensitivity-{args.dataset}"
    sweeps = tuple(s for s in sweeps if s.name in args.sweeps)
    spec = with_base_point(spec, sweeps, args.overrides)
    out = args.out or RESULTS / (args.name or default_name)
    out.mkdir(parents=True, exist_ok=True)
    jobs, points = build_jobs(
        spec, sweeps, args.seeds, ALL_MODELS["recnet-no-backward"], args.overrides, out / "traces"
    )
    print(f"{len(jobs)} runs ({len(points)} sweep points), results in {out}", flush=True)
    records = run_jobs(jobs, workers=args.workers)
    rows = point_records(records, points)
    summary = aggregate(rows, ("sweep", "value"), COLUMNS)
    write_csv(rows, out / "runs.csv")
    write_csv(summary, out / "summary.csv")
    given = sys.argv[1:] if argv is None else list(argv)
    path = report(
        summary,
        sweeps,
        out,
        title=spec.key,
        command=("python experiments/sensitivity.py " + " ".join(given)).strip(),
        seconds=time.perf_counter() - started,
    )
    print(path.read_text(encoding="utf-8"))
    return out


if __name__ == "__main__":
    main()

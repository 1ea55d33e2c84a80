"""Main comparison table: classic baselines and RecNet variants on identical candidates and seeds.

Pipeline position: an experiment on top of ``experiments.harness`` (which runs
``recnet.runner.simulate`` per agent variant and fits ``recnet.baselines`` on
``recnet.runner.prepare``'s split). Reproduces the layout of the RecNet paper's main comparison
(classic baselines, AgentCF, RecNet) and its ablation table (w/o backward, w/o buffer & filter,
point-to-point, top-k routing) on ml-latest-small, the synthetic world and any RecBole folder.

Protocol: leave-one-out by time, 1 true + ``evaluation.n_negatives`` (19) sampled unseen
negatives per test user, the same lists for every model of a (dataset, seed); metrics NDCG@{1,5,10},
HR@{1,5,10}, MRR as mean ± sample std over seeds. Cost columns per training interaction: agent
operations counted by the offline brain, and the LLM calls and tokens an LLM brain would need
(``experiments.costs``: the library's dry-run estimate when available).

Outputs in ``experiments/results/<name>/``: ``table.md`` (the tables and an automatic
"where RecNet stands" paragraph), ``summary.csv`` (mean/std per dataset and model), ``runs.csv``
(one row per dataset, model and seed) and ``ndcg.png``.

Usage::

    python experiments/compare.py                      # ml-latest-small + synthetic, seeds 0 1 2
    python experiments/compare.py --recbole path/to/CDs-100-user-dense \
        --set evaluation.n_negatives=9                 # AgentCF's folders (1 + 9 candidates)
    python experiments/compare.py --smoke              # seconds: tiny worlds, one seed
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.harness import (
    AGENT_VARIANTS,
    ALL_MODELS,
    CLASSIC_MODELS,
    METRICS,
    MOVIELENS,
    REFERENCE_VARIANT,
    RESULTS,
    SMOKE_MOVIELENS,
    SMOKE_SYNTHETIC,
    SYNTHETIC,
    DatasetSpec,
    Job,
    Record,
    agent_job,
    classic_job,
    recbole_spec,
    run_jobs,
)
from experiments.plots import bar_chart
from experiments.tables import (
    aggregate,
    group_records,
    lift_text,
    markdown_table,
    mean_std,
    number,
    paired_lift,
    pm,
    read_csv,
    write_csv,
)

COST_COLUMNS = (
    "ops_per_inter",
    "train_ops_per_inter",
    "llm_calls_per_inter",
    "tokens_per_inter",
    "tokens_measured_per_inter",
    "recipients_per_multicast",
    "seconds",
)
SMOKE_VARIANTS = ("recnet-no-backward", "agentcf")
DATASETS = {"ml-latest-small": MOVIELENS, "synthetic": SYNTHETIC}


def build_jobs(
    specs: Sequence[DatasetSpec],
    seeds: Sequence[int],
    variants: Sequence[str],
    classic: Sequence[str],
    out: Path,
    extra: Sequence[str],
    keep_traces: bool,
) -> list[Job]:
    """Agent jobs first (slow ones early keeps two workers busy), then classic baselines. The
    MovieLens smoke subsample runs only the first variant (its catalogue of 9,742 items makes
    every agent run cost ~8 s even with 30 users)."""
    agent = [
        agent_job(spec, ALL_MODELS[v], seed, out / "traces", extra=extra, keep_trace=keep_traces)
        for spec in specs
        for v in (variants[:1] if spec == SMOKE_MOVIELENS else variants)
        for seed in seeds
    ]
    classic_jobs = [
        classic_job(spec, seed, classic, extra=extra) for spec in specs for seed in seeds
    ]
    return agent + classic_jobs if classic else agent


def check_candidates(records: list[Record]) -> list[str]:
    """Each agent run scores popularity on its own candidate lists; it must match the classic
    popularity of the same (dataset, seed) exactly. Returns problems (empty = identical)."""
    classic = {
        (r["dataset"], r["seed"]): r
        for r in records
        if r["model"] == "popularity" and r.get("status") == "ok"
    }
    problems = []
    for r in records:
        pop = classic.get((r["dataset"], r["seed"]))
        if r.get("status") != "ok" or "inner_ndcg@10" not in r or pop is None:
            continue
        if r["inner_ndcg@10"] is None:
            continue
        worst = max(abs(r[f"inner_{m}"] - pop[m]) for m in METRICS)
        r["candidates_identical"] = worst < 1e-12
        if worst >= 1e-12:
            problems.append(f"{r['dataset']} seed {r['seed']} {r['model']}: popularity differs")
    return problems


def flag_no_ops(records: list[Record]) -> None:
    """A variant whose metrics and operation counts equal the defaults' on every seed most likely
    has no effect (an option not implemented yet): say so in its note."""
    by_key = {(r["dataset"], r["model"], r["seed"]): r for r in records}
    for (dataset, model), members in group_records(records, ("dataset", "model")).items():
        variant = ALL_MODELS.get(model)
        if variant is None or variant.kind != "agent" or model == REFERENCE_VARIANT:
            continue
        same = []
        for r in members:
            ref = by_key.get((dataset, REFERENCE_VARIANT, r["seed"]))
            if r.get("status") != "ok" or ref is None or ref.get("status") != "ok":
                break
            ops = {k: v for k, v in r.items() if k.startswith("op_")}
            ref_ops = {k: v for k, v in ref.items() if k.startswith("op_")}
            same.append(all(r[m] == ref[m] for m in METRICS) and ops == ref_ops)
        if same and all(same):
            for r in members:
                r["note"] = (
                    "identical to RecNet w/o backward on every seed (same metrics and operation "
                    "counts): the option changed nothing on this dataset"
                )


def add_per_operation(records: list[Record]) -> list[str]:
    """Per-interaction rate of each operation (``per_inter_<op>``); returns the operations."""
    ops: dict[str, None] = {}
    for r in records:
        for key in list(r):
            if key.startswith("op_") and r[key] is not None:
                op = key[3:]
                ops[op] = None
                r[f"per_inter_{op}"] = r[key] / max(r.get("n_train", 1), 1)
    return list(ops)


def ordered(rows: list[Record], models: Sequence[str]) -> list[Record]:
    rank = {m: k for k, m in enumerate(models)}
    return sorted(rows, key=lambda r: rank.get(r["model"], len(rank)))


def standing(rows: list[Record], records: list[Record]) -> list[str]:
    """Plain sentences: where the best RecNet row stands against BPR-MF, ItemKNN, Pop and AgentCF.

    Differences are paired by seed (same candidate lists): the mean per-seed difference ± its
    sample std; the verdict says whether NDCG@10 is higher on every seed, lower on every seed,
    or mixed (within seed noise)."""
    by_model = {r["model"]: r for r in rows if r.get("n", 0) > 0}
    recnet_key = next((k for k in ("recnet-full", "recnet-no-backward") if k in by_model), None)
    if recnet_key is None:
        return ["No RecNet variant finished on this dataset."]
    per_seed = {
        (r["model"], r["seed"]): r for r in records if r.get("status") == "ok" and "ndcg@10" in r
    }
    label = ALL_MODELS[recnet_key].label
    lines = []
    for other in ("bprmf", "itemknn", "popularity", "agentcf"):
        if other not in by_model:
            continue
        seeds = sorted(s for (m, s) in per_seed if m == recnet_key and (other, s) in per_seed)
        if not seeds:
            continue
        parts = []
        for metric in ("ndcg@10", "ndcg@5", "hr@10", "mrr"):
            a = [per_seed[(recnet_key, s)][metric] for s in seeds]
            b = [per_seed[(other, s)][metric] for s in seeds]
            diff, sd = mean_std([x - y for x, y in zip(a, b, strict=True)])
            ma, mb = mean_std(a)[0], mean_std(b)[0]
            rel = diff / mb * 100 if mb else math.nan
            spread = f" ± {sd:.4f}" if len(seeds) > 1 else ""
            parts.append(
                f"{metric.upper()} {ma:.4f} vs {mb:.4f} ({diff:+.4f}{spread}, {rel:+.1f}%)"
            )
        signs = {
            (per_seed[(recnet_key, s)]["ndcg@10"] > per_seed[(other, s)]["ndcg@10"]) for s in seeds
        }
        every = "on every seed" if len(seeds) > 1 else f"on seed {seeds[0]}"
        verdict = (
            f"beats {ALL_MODELS[other].label} {every}"
            if signs == {True}
            else f"trails {ALL_MODELS[other].label} {every}"
            if signs == {False}
            else f"is within seed noise of {ALL_MODELS[other].label} (mixed across seeds)"
        )
        lines.append(f"- {label} {verdict}: " + "; ".join(parts) + ".")
    lines.append(
        "- Differences are paired by seed: mean of per-seed differences ± their sample std; the "
        "verdict is on NDCG@10."
    )
    return lines


def dataset_line(records: list[Record]) -> str:
    classic = [r for r in records if r.get("status") == "ok" and r.get("n_users") is not None]
    if not classic:
        agent = [r for r in records if r.get("status") == "ok"]
        if not agent:
            return ""
        return f"{agent[0]['n_train']:,} training interactions"
    r = classic[0]
    return (
        f"{r['n_users']:,} users, {r['n_items']:,} items, {r['n_train']:,} training "
        f"interactions, {r['n_test_users']:,} test users per seed"
    )


def main_table(rows: list[Record]) -> str:
    headers = ["Model", "n", *[m.upper() for m in METRICS], "ops/inter", "LLM calls/inter",
               "tokens/inter", "note"]  # fmt: skip
    body = []
    for r in rows:
        variant = ALL_MODELS.get(r["model"])
        agent = variant is not None and variant.kind == "agent"
        note = r["note"] if r["status"] != "ok" or r["note"] else ""
        if r["status"] != "ok" and not note:
            note = r["status"]
        body.append(
            [
                variant.label if variant is not None else r["model"],
                r["n"],
                *[pm(r, m) for m in METRICS],
                pm(r, "ops_per_inter", 2) if agent else "–",
                pm(r, "llm_calls_per_inter", 2) if agent else "–",
                pm(r, "tokens_per_inter", 0) if agent else "–",
                note,
            ]
        )
    return markdown_table(headers, body)


PREQUENTIAL = ("preq_ndcg@10", "preq_hr@10", "preq_mrr")
LIFT_REFERENCE = "agentcf"


def lift_table(rows: list[Record], records: list[Record]) -> str:
    """Agent variants: prequential metrics and the paired lift over AgentCF-style (mean of
    per-seed differences, 95 % t-interval) on final and prequential NDCG@10."""
    agent_rows = [
        r for r in rows if r["n"] > 0 and r["model"] in ALL_MODELS
        and ALL_MODELS[r["model"]].kind == "agent"
    ]  # fmt: skip
    headers = ["Variant", "n", "preq NDCG@10", "preq HR@10", "preq MRR", "NDCG@10",
               "lift NDCG@10 [95% CI]", "lift preq NDCG@10 [95% CI]",
               "backward kept / rolled back"]  # fmt: skip
    body = []
    for r in agent_rows:
        model = r["model"]
        lifts = [
            "reference" if model == LIFT_REFERENCE
            else lift_text(paired_lift(records, model, LIFT_REFERENCE, column))
            for column in ("ndcg@10", "preq_ndcg@10")
        ]  # fmt: skip
        ok = [x for x in records if x.get("model") == model and x.get("status") == "ok"]
        kept = sum(int(x.get("optimizations_kept") or 0) for x in ok)
        rolled = sum(int(x.get("optimizations_rolled_back") or 0) for x in ok)
        body.append(
            [ALL_MODELS[model].label, r["n"], *[pm(r, c) for c in PREQUENTIAL], pm(r, "ndcg@10"),
             *lifts, f"{kept} / {rolled}" if kept or rolled else "–"]
        )  # fmt: skip
    return markdown_table(headers, body)


def filter_table(records: list[Record]) -> str:
    """Per agent variant (summed over seeds): messages and the share each filter rule or buffer
    policy stopped, from the traces' ``messages`` rows."""
    totals: dict[str, dict[str, int]] = {}
    for r in records:
        if r.get("status") != "ok" or r.get("model") not in ALL_MODELS:
            continue
        mine = totals.setdefault(r["model"], {})
        for key, value in r.items():
            counted = key in ("messages", "accepted", "rejected", "dropped") or key.startswith(
                "rule_"
            )
            if counted and isinstance(value, int | float) and not math.isnan(value):
                mine[key] = mine.get(key, 0) + int(value)
    rules = sorted({k for mine in totals.values() for k in mine if k.startswith("rule_")})
    headers = ["Variant", "messages", "accepted", "rejected", "dropped",
               *[k.removeprefix("rule_").replace("_", " ", 1) for k in rules]]  # fmt: skip

    def share(n: int, of: int) -> str:
        return f"{n / of:.2%}" if of else "–"

    body = []
    for model, mine in totals.items():
        n = mine.get("messages", 0)
        if not n:
            continue
        body.append(
            [ALL_MODELS[model].label, f"{n:,}",
             *[share(mine.get(k, 0), n) for k in ("accepted", "rejected", "dropped")],
             *[share(mine.get(k, 0), n) for k in rules]]
        )  # fmt: skip
    return markdown_table(headers, body) if body else "No messages."


def cost_table(rows: list[Record], ops: Sequence[str]) -> str:
    agent_rows = [
        r for r in rows if r["n"] > 0 and r["model"] in ALL_MODELS
        and ALL_MODELS[r["model"]].kind == "agent"
    ]  # fmt: skip
    headers = ["Variant", *ops, "train ops/inter", "tokens/inter (measured sizes)",
               "recipients/multicast", "seconds/run"]  # fmt: skip
    body = [
        [
            ALL_MODELS[r["model"]].label,
            *[number(r.get(f"per_inter_{op}_mean", math.nan), 3) for op in ops],
            number(r["train_ops_per_inter_mean"], 2),
            number(r["tokens_measured_per_inter_mean"], 0),
            number(r["recipients_per_multicast_mean"], 1),
            number(r["seconds_mean"], 1),
        ]
        for r in agent_rows
    ]
    return markdown_table(headers, body)


def cost_method(records: list[Record]) -> str:
    methods = {r.get("cost_method") for r in records if r.get("cost_method")}
    notes = sorted({r["cost_note"] for r in records if r.get("cost_note")})
    if methods == {"recnet.dry_run"}:
        text = (
            "from `recnet.dry_run.estimate` (the `recnet simulate --dry-run` estimate: the LLM "
            "brain's calls per operation, prompts rendered from the prompt pack with typical-"
            "length placeholders + output schema at 4 chars/token, 150 output tokens per call)"
        )
    else:
        text = (
            "estimated by `experiments/costs.py` from the default prompt pack rendered with the "
            "run's measured text sizes (one call per operation)"
        )
    return text + (f"; {'; '.join(notes)}" if notes else "")


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" (with uncommitted changes)" if dirty else "")


def write_report(
    records: list[Record],
    out: Path,
    *,
    meta: dict[str, Any],
    models: Sequence[str],
    problems: Sequence[str],
) -> tuple[Path, list[Record]]:
    """Write runs.csv, summary.csv, table.md and ndcg.png; ``meta`` holds the command, wall-clock
    seconds, workers, start revision and finish time of the run (``meta.json``)."""
    ops = add_per_operation(records)
    columns = [*METRICS, *PREQUENTIAL, *COST_COLUMNS, *[f"per_inter_{op}" for op in ops]]
    summary = aggregate(records, ("dataset", "model"), columns)
    write_csv(records, out / "runs.csv")
    write_csv(summary, out / "summary.csv")
    lines = [
        "# RecNet main comparison",
        "",
        f"- Command: `{meta.get('command', '?')}`",
        f"- Wall-clock: {meta.get('seconds', math.nan):.0f} s with {meta.get('workers', '?')} "
        f"worker(s); finished {meta.get('finished', '?')}; recnet revision at start "
        f"{meta.get('revision', '?')}"
        + (f"; tables re-rendered from runs.csv {meta['rendered']}" if "rendered" in meta else ""),
        "- Protocol: leave-one-out by time; per test user 1 true item + sampled unseen negatives "
        "(the scenario's `evaluation.n_negatives`), identical lists for every model of a "
        "(dataset, seed); mean ± sample std over seeds (n = finished seeds).",
        "- Agent variants: offline brain, hashing embedder. ops/inter = agent operations the "
        "offline brain performed per training interaction (all of them, including the one-off "
        "item extraction and the final test ranking; the cost breakdown lists them per "
        "operation, and train ops/inter without those two). LLM calls/inter and tokens/inter = "
        "what the LLM brain would need per training interaction, " + cost_method(records) + ".",
        "- Candidate lists: "
        + (
            "identical across models (popularity scored inside every agent run matches the "
            "classic Pop row exactly)."
            if not problems
            else "MISMATCH: " + "; ".join(problems)
        ),
        "",
    ]
    groups = group_records(summary, ("dataset",))
    panels = []
    for (dataset,), rows in groups.items():
        rows = ordered(rows, models)
        panels.append((dataset, rows))
        lines += [f"## {dataset}", ""]
        info = dataset_line([r for r in records if r["dataset"] == dataset])
        if info:
            lines += [info, ""]
        mine = [r for r in records if r["dataset"] == dataset]
        lines += [main_table(rows), "", "### Where RecNet stands", "", *standing(rows, mine), ""]
        lines += [
            "### Prequential metrics and lift over AgentCF-style",
            "",
            "Prequential: each training interaction's true item ranked against "
            "`evaluation.prequential.n_negatives` sampled unseen items before it is learned "
            "(identical candidates for every variant of a seed). Lift: mean of per-seed "
            "differences against AgentCF-style (`propagation.enabled=false`) with a 95 % "
            "t-interval.",
            "",
            lift_table(rows, mine),
            "",
            "### Filter decisions (share of messages, all seeds)",
            "",
            "Which filter rule (or buffer policy) stopped how many router messages; "
            "`max_share` caps the propagated share instead of rejecting messages.",
            "",
            filter_table(mine),
            "",
        ]
        lines += [
            "### Cost breakdown (operations per training interaction, mean over seeds)",
            "",
            cost_table(rows, ops),
            "",
        ]
    report = out / "table.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    label_of = {k: v.label for k, v in ALL_MODELS.items()}
    bar_chart(panels, ["ndcg@5", "ndcg@10"], out / "ndcg.png", label_of=label_of)
    return report, summary


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="*", choices=list(DATASETS), default=list(DATASETS),
        help="built-in datasets (default: both)",
    )  # fmt: skip
    parser.add_argument("--recbole", type=Path, action="append", default=[],
                        help="a RecBole atomic folder (repeatable)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=[v.key for v in AGENT_VARIANTS],
                        default=[v.key for v in AGENT_VARIANTS])  # fmt: skip
    parser.add_argument("--baselines", nargs="*", choices=[v.key for v in CLASSIC_MODELS],
                        default=[v.key for v in CLASSIC_MODELS])  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="scenario override for every run")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="processes (at most 2)")
    parser.add_argument("--name", default=None, help="results sub-folder (default: main/smoke)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (overrides --name)")
    parser.add_argument("--keep-traces", action="store_true", help="keep every run's trace DB")
    parser.add_argument("--from-runs", type=Path, default=None, metavar="DIR",
                        help="re-render DIR's tables and plot from DIR/runs.csv")  # fmt: skip
    parser.add_argument(
        "--smoke", action="store_true",
        help="seconds: tiny synthetic world (two variants) + 30-user MovieLens (one), one seed",
    )  # fmt: skip
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    if args.smoke:
        if "--seeds" not in given:
            args.seeds = [0]
        if "--variants" not in given:
            args.variants = list(SMOKE_VARIANTS)
    return args


def parse_value(text: str) -> Any:
    """A CSV cell back to a Python value (None, bool, int, float or str)."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_records(path: Path) -> list[Record]:
    records = [{k: parse_value(v) for k, v in row.items()} for row in read_csv(path)]
    for r in records:  # notes written by flag_no_ops are recomputed
        if str(r.get("note") or "").startswith("identical to RecNet"):
            r["note"] = ""
    return records


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    started = time.perf_counter()
    given = list(sys.argv[1:] if argv is None else argv)
    models = [*args.baselines, *args.variants]
    if args.from_runs is not None:
        out = args.from_runs
        records = load_records(out / "runs.csv")
        meta_path = out / "meta.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        meta["rendered"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    else:
        revision = git_revision()
        if args.smoke:
            specs = [SMOKE_SYNTHETIC, SMOKE_MOVIELENS]
        else:
            specs = [DATASETS[d] for d in args.datasets]
        specs += [recbole_spec(p) for p in args.recbole]
        out = args.out or RESULTS / (args.name or ("smoke" if args.smoke else "main"))
        out.mkdir(parents=True, exist_ok=True)
        jobs = build_jobs(
            specs, args.seeds, args.variants, args.baselines, out, args.overrides, args.keep_traces
        )
        print(f"{len(jobs)} jobs, {min(args.workers, 2)} worker(s), results in {out}", flush=True)
        records = run_jobs(jobs, workers=args.workers)
        meta = {
            "command": ("python experiments/compare.py " + " ".join(given)).strip(),
            "seconds": time.perf_counter() - started,
            "workers": min(args.workers, 2),
            "revision": revision,
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    problems = check_candidates(records)
    flag_no_ops(records)
    report, _ = write_report(records, out, meta=meta, models=models, problems=problems)
    print(report.read_text(encoding="utf-8"))
    print(f"\nwrote {report}, {out / 'summary.csv'}, {out / 'runs.csv'}, {out / 'ndcg.png'}")
    return out


if __name__ == "__main__":
    main()

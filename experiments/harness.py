"""Shared experiment harness: datasets, model variants, and running one (dataset, model, seed) job.

Pipeline position: under the experiment scripts (``compare``, ``sensitivity``,
``propagation_truth``), on top of the library's composition root (``recnet.runner``). A job is
picklable and self-contained, so a list of jobs runs serially or in a process pool (at most two
workers on the 2-core reference machine); results come back in job order, so the pool changes
wall-clock time only, never the numbers.

* Agent variants are scenario overrides of the same YAML (``recnet.config.loader``), run with
  ``recnet.runner.simulate`` (offline brain, hashing embedder, no network).
* Classic baselines are fitted on ``prepare(scenario).split.train`` and scored on
  ``prepare(scenario).test_candidates`` — the identical split and candidate lists the agent
  variants use for that seed (checked: the popularity scores computed inside each agent run must
  equal the ones computed here).
* A variant whose option is not implemented yet (ImportError, or a scenario key the installed
  version rejects) yields a row with status ``not available`` and the reason, instead of
  stopping the whole experiment.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from experiments.costs import TextSizes, estimate_tokens_total, llm_cost, tokens_per_operation
from recnet.baselines import Scorer, evaluate_scorer
from recnet.config.loader import load_scenario
from recnet.config.scenario import Scenario
from recnet.errors import RecnetError
from recnet.eval.protocol import item_universe
from recnet.registry import BASELINES
from recnet.runner import Prepared, prepare, simulate

with contextlib.suppress(ImportError):
    # imported here, not lazily by the runner, so that a worker process runs one version of the
    # library even when the code changes on disk during a long experiment
    import recnet.dry_run
    import recnet.phases.backward  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
RESULTS = ROOT / "experiments" / "results"
METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "hr@1", "hr@5", "hr@10", "mrr")

Record = dict[str, Any]


# --- models ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One row of a table: an agent variant (scenario overrides) or a classic baseline."""

    key: str
    label: str
    kind: str  # "agent" | "classic"
    overrides: tuple[str, ...] = ()


AGENT_VARIANTS: tuple[Variant, ...] = (
    Variant("recnet-full", "RecNet (full)", "agent", ("backward.enabled=true",)),
    Variant(
        "recnet-no-gate",
        "RecNet (full), validation gate off",
        "agent",
        ("backward.enabled=true", "backward.epsilon=1.0"),  # NDCG never falls by more than 1
    ),
    Variant("recnet-no-backward", "RecNet w/o backward", "agent"),
    Variant(
        "no-buffer-filter",
        "RecNet w/o buffer & filter",
        "agent",
        ("world.filters.enabled=false", "world.buffer.enabled=false"),
    ),
    Variant(
        "point-to-point",
        "Point-to-point propagation",
        "agent",
        ("propagation.mode=point_to_point",),
    ),
    Variant("top-k-routing", "Top-k routing (no τ)", "agent", ("propagation.routing=top_k",)),
    Variant(
        "paper-perception",
        "Paper perception (nearest router, τ multicast)",
        "agent",
        ("propagation.perception=nearest_router", "propagation.routing=threshold"),
    ),
    Variant(
        "community-delta",
        "Community routing, delta messages",
        "agent",
        ("propagation.message=delta",),
    ),
    Variant("agentcf", "AgentCF-style (no propagation)", "agent", ("propagation.enabled=false",)),
)
CLASSIC_MODELS: tuple[Variant, ...] = (
    Variant("random", "Random", "classic"),
    Variant("popularity", "Pop", "classic"),
    Variant("itemknn", "ItemKNN", "classic"),
    Variant("bprmf", "BPR-MF", "classic"),
    Variant("sasrec", "SASRec", "classic"),
)
ALL_MODELS: dict[str, Variant] = {v.key: v for v in AGENT_VARIANTS + CLASSIC_MODELS}
REFERENCE_VARIANT = "recnet-no-backward"  # the defaults; other variants are compared with it


def classic_factories(seed: int) -> dict[str, Callable[[], Scorer]]:
    """Classic scorers of the library's baseline registry (``recnet.registry.BASELINES``)."""
    return {
        name: functools.partial(BASELINES.get(name), seed)
        for name in ("random", "popularity", "itemknn", "bprmf")
    }


def sasrec_factory(seed: int) -> tuple[Callable[[], Scorer] | None, str]:
    """SASRec once ``recnet.baselines.sasrec`` exists, else (None, why not).

    recnet ships no SASRec scorer yet, so it declares no torch extra either; the row says so.
    """
    try:
        from recnet.baselines.sasrec import SASRecScorer  # type: ignore[import-not-found]
    except ImportError:
        return None, "recnet has no SASRec scorer yet"
    return (lambda: SASRecScorer(seed=seed)), ""


# --- datasets -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """A dataset row group: a scenario file and the overrides that select the data."""

    key: str
    scenario: Path
    overrides: tuple[str, ...] = ()


MOVIELENS = DatasetSpec("ml-latest-small", SCENARIOS / "movielens.yaml")
SYNTHETIC = DatasetSpec("synthetic", SCENARIOS / "synthetic.yaml")
SMOKE_SYNTHETIC = DatasetSpec(
    "synthetic-smoke",
    SCENARIOS / "synthetic.yaml",
    (
        "dataset.synthetic.n_users=40",
        "dataset.synthetic.n_items=80",
        "dataset.synthetic.n_communities=4",
        "world.n_routers=4",
        "propagation.update_size=50",
    ),
)
SMOKE_MOVIELENS = DatasetSpec(
    "ml-latest-small-smoke",
    SCENARIOS / "movielens.yaml",
    ("dataset.max_users=30", "propagation.update_size=1000"),
)


def recbole_spec(path: Path) -> DatasetSpec:
    """Any RecBole atomic folder, on the MovieLens scenario's settings with the paper's
    Updatesize of 20 (AgentCF/RecNet subsets are small: 100 users)."""
    folder = path.resolve()
    return DatasetSpec(
        f"recbole:{folder.name}",
        SCENARIOS / "movielens.yaml",
        (
            f"name=recbole-{folder.name}",
            "dataset.kind=recbole",
            f"dataset.path={folder}",
            "propagation.update_size=20",
        ),
    )


# --- jobs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One unit of work: an agent variant for one seed, or all classic baselines for one seed."""

    dataset: str
    scenario: str
    overrides: tuple[str, ...]
    model: str  # a Variant key, or "classic" for every classic baseline at once
    seed: int
    trace_path: str | None = None
    keep_trace: bool = False
    classic: tuple[str, ...] = ()  # which classic models (kind "classic" jobs)
    tags: tuple[tuple[str, Any], ...] = field(default_factory=tuple)  # copied into records


def agent_job(
    spec: DatasetSpec,
    variant: Variant,
    seed: int,
    trace_dir: Path,
    *,
    extra: Sequence[str] = (),
    keep_trace: bool = False,
    tags: Sequence[tuple[str, Any]] = (),
    suffix: str = "",
) -> Job:
    name = f"{safe(spec.key)}__{variant.key}{suffix}__s{seed}.sqlite"
    return Job(
        dataset=spec.key,
        scenario=str(spec.scenario),
        overrides=(*spec.overrides, *variant.overrides, *extra, f"seed={seed}"),
        model=variant.key,
        seed=seed,
        trace_path=str(trace_dir / name),
        keep_trace=keep_trace,
        tags=tuple(tags),
    )


def classic_job(
    spec: DatasetSpec, seed: int, models: Sequence[str], *, extra: Sequence[str] = ()
) -> Job:
    return Job(
        dataset=spec.key,
        scenario=str(spec.scenario),
        overrides=(*spec.overrides, *extra, f"seed={seed}"),
        model="classic",
        seed=seed,
        classic=tuple(models),
    )


def safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def base_record(job: Job, model: str) -> Record:
    return {"dataset": job.dataset, "model": model, "seed": job.seed, **dict(job.tags)}


def run_job(job: Job) -> list[Record]:
    """Run one job; expected unavailability becomes a record, never an exception."""
    if job.model == "classic":
        return run_classic(job)
    return [run_agent(job)]


def run_agent(job: Job) -> Record:
    record = base_record(job, job.model)
    try:
        scenario = load_scenario(job.scenario, list(job.overrides))
    except RecnetError as exc:
        return {**record, "status": "not available", "note": one_line(exc)}
    trace = Path(job.trace_path) if job.trace_path else None
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        remove_trace(trace)
    try:
        result = asyncio.run(simulate(scenario, trace_path=trace))
    except ImportError as exc:
        remove_trace(trace)
        return {**record, "status": "not available", "note": f"not implemented yet ({exc})"}
    except RecnetError as exc:
        remove_trace(trace)
        return {**record, "status": "not available", "note": one_line(exc)}
    except Exception as exc:  # an experiment reports a crash and carries on with the rest
        traceback.print_exc(file=sys.stderr)
        remove_trace(trace)
        return {**record, "status": "failed", "note": one_line(exc)}
    summary = trace_summary(result.trace_path, scenario, result.operations.get("merge", 0))
    measured = tokens_per_operation(summary.pop("sizes"))
    measured_tokens, _ = estimate_tokens_total(result.operations, measured)
    cost = llm_cost(scenario, result, measured)
    n = max(result.n_train, 1)
    ops = sum(result.operations.values())
    # one-off operations: item extraction at start, one ranking per test user at the end
    one_off = result.operations.get("extract", 0) + min(
        result.operations.get("rank", 0), result.n_test_users
    )
    record.update(
        {
            "status": "ok",
            "note": "",
            **{m: result.metrics["recnet"][m] for m in METRICS},
            **{
                f"preq_{m}": (result.prequential.overall[m] if result.prequential else None)
                for m in METRICS
            },
            "n_train": result.n_train,
            "n_steps": result.n_steps,
            "n_test_users": result.n_test_users,
            "seconds": result.seconds,
            "ops": ops,
            "ops_per_inter": ops / n,
            "train_ops_per_inter": (ops - one_off) / n,
            "llm_calls": cost.calls,
            "llm_calls_per_inter": cost.calls / n,
            "tokens": cost.tokens,
            "tokens_per_inter": cost.tokens / n,
            "tokens_measured_per_inter": measured_tokens / n,
            "cost_method": cost.method,
            "cost_note": cost.note,
            **{f"op_{k}": v for k, v in sorted(result.operations.items())},
            **{f"inner_{m}": result.metrics.get("popularity", {}).get(m) for m in METRICS},
            **summary,
        }
    )
    if job.keep_trace:
        record["trace_path"] = str(result.trace_path)
    else:
        remove_trace(result.trace_path)
    return record


def run_classic(job: Job) -> list[Record]:
    started = time.perf_counter()
    try:
        scenario = load_scenario(job.scenario, list(job.overrides))
        prepared = prepare(scenario)
    except RecnetError as exc:  # e.g. a RecBole folder without enough candidates
        why = one_line(exc)
        return [
            {**base_record(job, m), "status": "not available", "note": why} for m in job.classic
        ]
    prepare_s = time.perf_counter() - started
    records = []
    for model in job.classic:
        records.append(fit_and_score(job, scenario, prepared, model, prepare_s))
    return records


def fit_and_score(
    job: Job, scenario: Scenario, prepared: Prepared, model: str, prepare_s: float
) -> Record:
    record = base_record(job, model)
    if model == "sasrec":
        factory, why = sasrec_factory(job.seed)
    else:
        factory, why = classic_factories(job.seed)[model], ""
    if factory is None:
        return {**record, "status": "not available", "note": why}
    scorer = factory()
    started = time.perf_counter()
    scorer.fit(prepared.split.train, item_universe(prepared.dataset))
    fitted = time.perf_counter()
    summary, _ = evaluate_scorer(
        scorer, prepared.split, prepared.test_candidates, scenario.evaluation.ks
    )
    return {
        **record,
        "status": "ok",
        "note": "",
        **{m: summary[m] for m in METRICS},
        "n_train": len(prepared.split.train),
        "n_test_users": len(prepared.test_candidates),
        "n_users": len(prepared.dataset.users),
        "n_items": len(item_universe(prepared.dataset)),
        "seconds": prepare_s + time.perf_counter() - started,
        "fit_s": fitted - started,
    }


def run_jobs(
    jobs: Sequence[Job], workers: int = 1, progress: Callable[[str], None] | None = None
) -> list[Record]:
    """All jobs' records, in job order; ``workers`` > 1 uses a spawn-context process pool."""
    say = progress or (lambda text: print(text, flush=True))
    records: list[Record] = []
    if workers <= 1 or len(jobs) <= 1:
        for k, job in enumerate(jobs):
            out = run_job(job)
            say(describe(k, len(jobs), job, out))
            records.extend(out)
        return records
    with ProcessPoolExecutor(max_workers=min(workers, 2), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        for k, (job, future) in enumerate(zip(jobs, futures, strict=True)):
            out = future.result()
            say(describe(k, len(jobs), job, out))
            records.extend(out)
    return records


def describe(k: int, n: int, job: Job, out: list[Record]) -> str:
    parts = []
    for r in out:
        if r.get("status") == "ok":
            parts.append(f"{r['model']} ndcg@10={r['ndcg@10']:.4f} ({r['seconds']:.1f}s)")
        else:
            parts.append(f"{r['model']} {r.get('status')}: {r.get('note', '')[:90]}")
    tags = " ".join(f"{key}={value}" for key, value in job.tags)
    return f"[{k + 1}/{n}] {job.dataset} seed={job.seed} {tags} " + "; ".join(parts)


# --- traces ---------------------------------------------------------------------------------
def remove_trace(path: Path | None) -> None:
    if path is None:
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


def connect_readonly(path: Path | str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)


def _scalar(con: sqlite3.Connection, sql: str, default: float = 0.0) -> float:
    value = con.execute(sql).fetchone()[0]
    return default if value is None else float(value)


def trace_summary(path: Path, scenario: Scenario, merges: int) -> Record:
    """Propagation counters and mean text sizes from a run's trace (one run per file);
    ``merges`` is the run's count of merge operations (router messages per merge call)."""
    with contextlib.closing(connect_readonly(path)) as con:
        n_clients = _scalar(con, "select count(*) from agents where kind in ('user', 'item')")
        totals = con.execute(
            "select sum(n_messages), sum(n_routers_updated), sum(n_accepted), sum(n_rejected), "
            "sum(n_dropped), sum(n_correct), sum(n_interactions) from steps"
        ).fetchone()
        messages, updated, accepted, rejected, dropped, correct, inters = (
            float(x or 0) for x in totals
        )
        if not updated and messages:  # point-to-point: clients send, no router is updated
            updated = _scalar(
                con, "select count(*) from (select distinct router_id, step from messages)"
            )

        def mean_len(where: str, table: str = "profile_versions") -> float:
            return _scalar(con, f"select avg(length(text)) from {table} where {where}", 0.0)

        user = mean_len("kind = 'original' and agent_id like 'u:%' and step >= 0")
        item = mean_len("kind = 'original' and agent_id like 'i:%' and step >= 0")
        item_init = mean_len("kind = 'original' and agent_id like 'i:%' and step = -1")
        prop = mean_len("kind = 'propagated'")
        router = mean_len("1 = 1", "router_versions")
        rules = tuple(
            row[0]
            for row in con.execute(
                "select text from filter_rule_versions where agent_id = '*' and step = -1 "
                "order by position"
            )
        )
        kept, rolled_back = con.execute(
            "select coalesce(sum(n_kept), 0), coalesce(sum(n_rolled_back), 0) from backward_steps"
        ).fetchone()
        by_rule = {
            f"rule_{status}_{rule}": int(n)
            for status, rule, n in con.execute(
                "select status, rule_id, count(*) from messages "
                "where status in ('rejected', 'dropped') group by status, rule_id"
            )
        }
    decided = accepted + rejected
    sizes = TextSizes(
        user_profile=user or 250.0,
        item_profile=item or item_init or 250.0,
        item_init=item_init or 120.0,
        propagated=prop or user or 250.0,
        router=router or 400.0,
        filter_rules=rules,
        messages_per_merge=decided / merges if merges else 1.0,
        n_candidates=scenario.evaluation.n_negatives + 1,
    )
    return {
        "sizes": sizes,
        "n_clients": int(n_clients),
        "messages": int(messages),
        "multicasts": int(updated),
        "recipients_per_multicast": messages / updated if updated else 0.0,
        "recipient_share": messages / updated / n_clients if updated and n_clients else 0.0,
        "accepted": int(accepted),
        "rejected": int(rejected),
        "dropped": int(dropped),
        "acceptance": accepted / decided if decided else float("nan"),
        "train_accuracy": correct / inters if inters else float("nan"),
        "optimizations_kept": int(kept),
        "optimizations_rolled_back": int(rolled_back),
        **by_rule,  # rule_rejected_<rule id> / rule_dropped_<rule id>: messages each rule stopped
    }


def one_line(exc: BaseException) -> str:
    """The first line of an error (recnet errors include their remedy)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

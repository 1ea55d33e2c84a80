"""The composition root: scenario → dataset → world → phase loop → evaluation → trace.

Pipeline position: the only module (besides the CLI) that builds concrete brains, embedders and
stores. ``simulate`` runs one scenario end to end and returns the metrics; the CLI adds progress
display and tables around it.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from recnet import __version__
from recnet.brain.base import Brain, OperationCounts
from recnet.brain.factory import build_brain
from recnet.checkpoint import Checkpoint, Checkpointed, add_checkpoint
from recnet.checkpoint import load as load_checkpoint
from recnet.config.loader import apply_overrides, validate_scenario
from recnet.config.scenario import Scenario
from recnet.context import RunContext
from recnet.errors import ScenarioError, TraceError
from recnet.eval.prequential import PrequentialSummary, prequential_metric_rows
from recnet.eval.protocol import CandidateSet
from recnet.phases.evaluate import (
    evaluate_baselines,
    metric_rows,
    rank_with_brain,
)
from recnet.phases.forward import ForwardPhase, StepState
from recnet.phases.initialise import initialise_world as initialise_world
from recnet.phases.loop import PhaseLoop
from recnet.phases.version_cadence import VersionCadence
from recnet.prepare import Prepared, build_embedder, prepare
from recnet.registry import BASELINES
from recnet.rng import SeedTree
from recnet.supervisor import supervised
from recnet.trace.lease import TraceLease
from recnet.trace.records import buffered_rows
from recnet.trace.sqlite_store import SQLiteTraceStore
from recnet.trace.store import TraceStore
from recnet.world.agents import ClientAgent, item_agent_id, user_agent_id
from recnet.world.world import World

if TYPE_CHECKING:
    from recnet.phases.backward import BackwardPhase

PACKAGES = ("numpy", "networkx", "langgraph", "pydantic", "sqlalchemy", "openai")


@dataclass
class RunResult:
    """What a finished run reports."""

    run_id: str
    trace_path: Path
    metrics: dict[str, dict[str, float]]  # model → metric → value
    n_steps: int
    n_train: int
    n_test_users: int
    seconds: float
    operations: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    llm_stats: object | None = None  # recnet.llm.stats.LLMStats for an LLM brain
    prequential: PrequentialSummary | None = None  # test-then-train metrics of the stream
    #: per operation: calls and prompt/output tokens (the LLM brain's measured traffic)
    operation_counts: OperationCounts | None = None
    #: offline brain: the LLM calls the LLM brain's policy would make (``recnet.dry_run``)
    planned_llm_calls: dict[str, int] = field(default_factory=dict)
    planned_llm_parts: dict[str, int] = field(default_factory=dict)  # agents per batched op
    scenario: Scenario | None = None


def new_run_id(scenario: Scenario) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    return f"{scenario.name}-s{scenario.seed}-{stamp}"


def default_trace_path(scenario: Scenario, run_id: str) -> Path:
    return scenario.trace.path or scenario.trace.dir / f"{run_id}.sqlite"


def versions() -> dict[str, str]:
    found = {"recnet": __version__, "python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "missing"
    return found


async def simulate(
    scenario: Scenario,
    *,
    trace_path: Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_prepared: Callable[[Prepared], None] | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Run ``scenario`` end to end; return metrics for RecNet and the baselines.

    The same as ``await recnet.Simulation(scenario, ...).arun()`` (``recnet.simulation``).
    """
    from recnet.simulation import Simulation

    simulation = Simulation(
        scenario, trace_path=trace_path, run_id=run_id, on_step=on_step, on_prepared=on_prepared
    )
    result = await simulation.arun()
    assert result is not None
    return result


def open_run(
    scenario: Scenario,
    *,
    trace_path: Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_prepared: Callable[[Prepared], None] | None = None,
    run_id: str | None = None,
) -> tuple[RunContext, Path, Prepared]:
    """Prepare the data, take the trace's writer lease (``ctx.lease``), open the trace, build
    the brain and record the run as ``running``; the caller runs it under ``supervised``, which
    closes everything and releases the lease."""
    prepared = prepare(scenario)
    if on_prepared is not None:
        on_prepared(prepared)
    run_id = run_id or new_run_id(scenario)
    path = Path(trace_path or default_trace_path(scenario, run_id))
    lease = TraceLease(path).acquire()
    try:
        store = SQLiteTraceStore(path, batch_size=scenario.trace.batch_size, background=True)
    except BaseException:
        lease.release()
        raise
    try:
        brain = _brain_for(scenario, store, path, run_id)
    except BaseException:
        store.close()
        lease.release()
        raise
    ctx = RunContext(
        scenario, brain, store, run_id, SeedTree(scenario.seed), on_step=on_step, lease=lease
    )
    store.create_run(
        {
            "run_id": run_id,
            "name": scenario.name,
            "seed": scenario.seed,
            "scenario_json": scenario.model_dump_json(),
            "versions_json": json.dumps(versions()),
            "dataset_source": prepared.dataset.source,
            "brain": brain.label,
            "status": "running",
            "started_at": ctx.clock(),
            "last_completed_step": -1,
        }
    )
    return ctx, path, prepared


#: Settings a resumed run may change: how calls are made and paid for and where work runs (the
#: executor), never what they ask, and which cut-offs and baselines the final evaluation reports
#: (it reruns after a resume).
RESUMABLE_OVERRIDES = (
    "evaluation.ks",
    "evaluation.baselines",
    "llm.budget.",
    "llm.retry.",
    "llm.rate_limit.",
    "llm.max_concurrency",
    "llm.base_url",
    "llm.endpoints",
    "llm.api_key_env",
    "llm.structured_output",
    "llm.fallback.",
    "trace.batch_size",
    "executor.",
)


def resumed_scenario(scenario_json: str, overrides: list[str] | None) -> Scenario:
    """The stored scenario with the allowed ``--set`` overrides applied (e.g. a raised budget)."""
    for override in overrides or []:
        key = override.partition("=")[0].strip()
        if not key.startswith(RESUMABLE_OVERRIDES):
            raise ScenarioError(
                f"--set {key}: a resumed run keeps its scenario",
                "only these may change on resume: " + ", ".join(RESUMABLE_OVERRIDES),
            )
    raw = apply_overrides(json.loads(scenario_json), overrides or [])
    try:
        return validate_scenario(raw, source="the scenario stored in the trace")
    except ScenarioError as exc:  # written by an older recnet that checked less
        exc.remedy = "fix it on resume with --set (allowed: " + ", ".join(RESUMABLE_OVERRIDES) + ")"
        raise


async def resume(
    trace_path: Path,
    *,
    overrides: list[str] | None = None,
    run_id: str | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_prepared: Callable[[Prepared], None] | None = None,
) -> RunResult:
    """Continue a stopped, failed or killed run from its newest checkpoint.

    The trace is truncated after the checkpoint's step (rows of unfinished or repeated steps go),
    the world is restored, and the loop goes on; LLM calls of repeated steps come from the cache.
    """
    started = time.perf_counter()
    path = Path(trace_path)
    if not path.is_file():
        raise TraceError(f"no trace file {path}", "pass the .sqlite file `recnet simulate` wrote")
    lease = TraceLease(path).acquire()
    try:
        store = SQLiteTraceStore(path, background=True)
    except BaseException:
        lease.release()
        raise
    try:
        run = _run_to_resume(store, run_id)
        rows = store.read("checkpoints", run["run_id"])
        if not rows:
            raise TraceError(
                f"run {run['run_id']} has no checkpoint yet (it stopped while initialising)",
                "start it again with `recnet simulate`",
            )
        newest = rows[-1]
        parts = store.read("checkpoint_parts", run["run_id"], step=newest["step"])
        checkpoint = load_checkpoint(newest["state"], newest["format"], [p["data"] for p in parts])
        scenario = resumed_scenario(run["scenario_json"], overrides)
        store.batch_size = scenario.trace.batch_size
        if overrides:
            store.update_run(run["run_id"], scenario_json=scenario.model_dump_json())
        prepared = prepare(scenario)
        if on_prepared is not None:
            on_prepared(prepared)
        brain = _brain_for(scenario, store, path, run["run_id"])
    except BaseException:
        store.close()
        lease.release()
        raise
    brain.operations = checkpoint.operations
    ctx = RunContext(
        scenario,
        brain,
        store,
        run["run_id"],
        SeedTree(scenario.seed),
        on_step=on_step,
        lease=lease,
    )
    ctx.stats = dict(checkpoint.run_stats)
    ctx.at(checkpoint.step, "resume")
    store.truncate_after(ctx.run_id, checkpoint.step)
    store.update_run(ctx.run_id, status="running", finished_at=None, note=None)
    world = checkpoint.world
    world.space.attach(build_embedder(scenario))

    async def body() -> dict[str, dict[str, float]]:
        return await run_loop(ctx, world, prepared, checkpoint=checkpoint)

    metrics = await supervised(ctx, path, body)
    return _result(ctx, path, prepared, metrics, started)


def _run_to_resume(store: SQLiteTraceStore, run_id: str | None) -> dict:
    runs = store.runs()
    if not runs:
        raise TraceError(f"{store.path} holds no run", "pass the trace of the run to resume")
    if run_id is None:
        run = runs[-1]
    else:
        matching = [r for r in runs if r["run_id"] == run_id]
        if not matching:
            known = ", ".join(r["run_id"] for r in runs[-5:])
            raise TraceError(f"no run {run_id!r} in {store.path}", f"runs in it: {known}")
        run = matching[0]
    if run["status"] == "finished":
        raise TraceError(
            f"run {run['run_id']} already finished", "nothing to resume; start a new run instead"
        )
    return run


def _result(
    ctx: RunContext,
    path: Path,
    prepared: Prepared,
    metrics: dict[str, dict[str, float]],
    started: float,
) -> RunResult:
    return RunResult(
        run_id=ctx.run_id,
        trace_path=path,
        metrics=metrics,
        n_steps=len(prepared.batches),
        n_train=len(prepared.split.train),
        n_test_users=len(prepared.test_candidates),
        seconds=time.perf_counter() - started,
        operations=dict(ctx.brain.operations.counts),
        stats=dict(ctx.stats),
        llm_stats=getattr(ctx.brain, "stats", None),
        prequential=ctx.prequential,  # type: ignore[arg-type]
        operation_counts=ctx.brain.operations,
        planned_llm_calls=dict(getattr(getattr(ctx.brain, "llm_calls", None), "counts", {})),
        planned_llm_parts=dict(getattr(getattr(ctx.brain, "plan", None), "parts", {})),
        scenario=ctx.scenario,
    )


def cache_path(scenario: Scenario, trace_path: Path) -> Path:
    """The LLM record/replay cache: ``llm.cache.path`` or ``llm-cache.sqlite`` beside the trace."""
    return scenario.llm.cache.path or trace_path.parent / "llm-cache.sqlite"


def _brain_for(scenario: Scenario, store: TraceStore, path: Path, run_id: str) -> Brain:
    """The scenario's brain, recording every LLM attempt into the run's ``llm_calls`` table."""

    def record(row: dict) -> None:
        store.add("llm_calls", [{**row, "run_id": run_id}])

    return build_brain(scenario, on_record=record, cache_path=cache_path(scenario, path))


def llm_flag(brain: Brain) -> str | None:
    """The mark for metrics an LLM brain produced from fallback or foreign answers, or None."""
    stats = getattr(brain, "stats", None)
    return stats.flag() if stats is not None and hasattr(stats, "flag") else None


async def run_loop(
    ctx: RunContext,
    world: World,
    prepared: Prepared,
    *,
    checkpoint: Checkpoint | None = None,
) -> dict[str, dict[str, float]]:
    """Run the forward steps (after the ``checkpoint``'s step, if resuming), then evaluate;
    return model → metrics."""
    loop, results = build_loop(ctx, world, prepared, checkpoint=checkpoint)
    await loop.run(checkpoint.step + 1 if checkpoint is not None else 0)
    return results


def build_loop(
    ctx: RunContext,
    world: World,
    prepared: Prepared,
    *,
    checkpoint: Checkpoint | None = None,
) -> tuple[PhaseLoop, dict[str, dict[str, float]]]:
    """The phase loop over ``prepared.batches`` and the dict its evaluation fills (model → metrics),
    with every part restored from ``checkpoint`` when resuming.

    Evaluation rows are recorded at step ``n_steps`` (one past the last forward step), so a run
    killed while evaluating is resumed without duplicate rows.
    """
    ctx.blas.fit(len(world.clients))  # executor.blas_threads: auto decides by the world's size
    forward = ForwardPhase(ctx, world)
    n_steps = len(prepared.batches)
    versions = VersionCadence.resolve(ctx, len(world.clients), n_steps)
    versions.bind(forward)  # and states the trace levels in force in the run row
    backward = make_backward_hook(ctx, world, prepared, forward)
    parts: dict[str, Checkpointed] = {"brain": ctx.brain, "forward": forward}
    if backward is not None:
        parts["backward"] = backward
    if checkpoint is not None:
        checkpoint.restore(parts)
    checkpoint_every = checkpoint_interval(ctx)
    results: dict[str, dict[str, float]] = {}

    def commit(state: StepState) -> None:
        store = ctx.store
        store.add("steps", [forward.step_row(state, ctx.clock())])
        if forward.message_trace.counting:
            store.add("message_counts", forward.message_trace.count_rows(ctx.run_id, state.step))
        last = state.step == n_steps - 1
        versions.write_due(forward, state.step, store)
        world.step = state.step
        if last or (state.step + 1) % checkpoint_every == 0:
            add_checkpoint(ctx, world, state.step, parts)
        store.commit_step(ctx.run_id, state.step)
        if ctx.on_step is not None:
            ctx.on_step(state.step, n_steps)

    async def evaluate(last_step: int) -> None:
        step = n_steps
        # test users rank and their candidates are ranked: they act, so lazy buffers merge now
        await forward.flush_before_act(
            StepState(step=step, interactions=[], started_at=ctx.clock(), keep_merges=False),
            acting_in_evaluation(world, prepared.test_candidates),
        )
        levels = forward.message_trace
        leftover = buffered_rows(ctx.run_id, world.clients, levels, step)
        if leftover:
            ctx.store.add("messages", leftover)
        if levels.counting:
            ctx.store.add("message_counts", levels.count_rows(ctx.run_id, step))
        metrics, _ = await rank_with_brain(
            ctx, world, prepared.split, prepared.test_candidates, which="test", step=step
        )
        results["recnet"] = metrics
        results.update(
            evaluate_baselines(
                ctx,
                fitted_baselines(ctx.scenario, prepared),
                prepared.split,
                prepared.test_candidates,
                which="test",
                step=step,
            )
        )
        flags = {"recnet": llm_flag(ctx.brain)}
        ctx.store.add("metrics", metric_rows(ctx.run_id, step, "test", results, flags))
        ctx.prequential = summary = forward.prequential_summary(n_steps)
        ctx.store.add(
            "metrics", prequential_metric_rows(ctx.run_id, step, summary, flag=flags["recnet"])
        )
        ctx.store.flush()

    loop = PhaseLoop(
        forward,
        prepared.batches,
        on_commit=commit,
        evaluate=evaluate,
        backward=backward,
        clock=ctx.clock,
        on_phase=ctx.at,
    )
    return loop, results


def acting_in_evaluation(world: World, candidates: CandidateSet) -> list[ClientAgent]:
    """The clients that act when ``candidates`` are ranked: each user, then its candidates."""
    acting: dict[str, ClientAgent] = {}
    for user in sorted(candidates):
        agent = world.users[user_agent_id(user)]
        acting.setdefault(agent.agent_id, agent)
        for item in candidates[user]:
            item_agent = world.items[item_agent_id(item)]
            acting.setdefault(item_agent.agent_id, item_agent)
    return list(acting.values())


def checkpoint_interval(ctx: RunContext) -> int:
    """Steps between checkpoints: ``trace.checkpoint_every``, or 1 (LLM) / 100 (offline).

    An offline checkpoint pickles the whole world (about half a second on ml-latest-small), and
    repeating up to 99 offline steps on resume costs seconds; an LLM step costs money.
    """
    every = ctx.scenario.trace.checkpoint_every
    if every > 0:
        return every
    return ctx.brain.checkpoint_every


def make_backward_hook(
    ctx: RunContext, world: World, prepared: Prepared, forward: ForwardPhase
) -> BackwardPhase | None:
    """The backward phase as a loop hook, or None when ``backward.enabled`` is false."""
    if not ctx.scenario.backward.enabled:
        return None
    from recnet.phases.backward import make_backward_hook as build

    return build(ctx, world, prepared, forward)


def fitted_baselines(scenario: Scenario, prepared: Prepared) -> list:
    """The scenario's baselines (``recnet.registry.BASELINES``), fitted on the training split."""
    item_ids = list(prepared.dataset.items)
    seeds = SeedTree(scenario.seed)
    scorers = []
    for name in scenario.evaluation.baselines:
        scorer = BASELINES.get(name)(seeds.integer_seed(f"{name}-baseline"))
        scorer.fit(prepared.split.train, item_ids)
        scorers.append(scorer)
    return scorers

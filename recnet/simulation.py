"""``Simulation``: the Python API to run a scenario step by step (notebooks, scripts, the CLI).

Pipeline position: a thin layer over the composition root (``recnet.runner``): it opens the run
the way ``recnet simulate`` does (same trace, lease, checkpoints and evaluation) and runs it under
the same ``recnet.supervisor.supervised`` (so a run ends as finished, stopped or failed with the
same notes and resume hints), but it can pause between steps so the world can be looked at::

    from recnet import Simulation, load_scenario

    sim = Simulation(load_scenario("scenarios/synthetic.yaml"))
    sim.step()                      # one forward step (interact → … → receive → backward)
    sim.world.routers               # inspect agents, routers, buffers, rules
    sim.run(steps=5)                # five more steps
    result = sim.run()              # to the end, then evaluation; returns a RunResult
    sim.metrics()                   # the final metrics (model → metric → value)

How it pauses: the supervised run is one asyncio task whose body runs the phase loop up to the
step asked for and then waits for the next request. ``arun()`` on a fresh simulation (what
``recnet simulate`` does) needs no pause and runs the body directly in the caller's task.

Every method has an async twin (``astep``, ``arun``, ``ametrics``, ``aclose``): use those with
``await`` inside a running event loop (Jupyter). The sync forms never call ``asyncio.run`` in a
running loop: they run the coroutines on one private event loop in a worker thread owned by the
simulation, so they also work in Jupyter (the call blocks the cell until the step is done). Use
one form per simulation: the run task and a brain's HTTP clients belong to the loop that started
them, and a call from another loop is refused with a clear error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from recnet.config.scenario import Scenario
from recnet.context import RunContext
from recnet.errors import RecnetError
from recnet.phases.evaluate import rank_with_brain
from recnet.phases.forward import StepState
from recnet.runner import (
    Prepared,
    RunResult,
    _result,
    build_embedder,
    build_loop,
    initialise_world,
    open_run,
)
from recnet.supervisor import supervised
from recnet.world.world import World

T = TypeVar("T")
Metrics = dict[str, dict[str, float]]


class SimulationClosed(RecnetError):
    """The simulation finished, failed or was closed; it takes no more steps."""


class Simulation:
    """One run of a scenario that can be advanced a step at a time and inspected in between."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        trace_path: Path | str | None = None,
        run_id: str | None = None,
        on_step: Callable[[int, int], None] | None = None,
        on_prepared: Callable[[Prepared], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self._trace_path = Path(trace_path) if trace_path is not None else None
        self._run_id = run_id
        self._on_step = on_step
        self._on_prepared = on_prepared
        self._ctx: RunContext | None = None
        self._world: World | None = None
        self._prepared: Prepared | None = None
        self._path: Path | None = None
        self._started = 0.0
        self._next_step = 0
        self._result: RunResult | None = None
        self._closed = False
        self._home: asyncio.AbstractEventLoop | None = None  # the loop the run task lives on
        self._task: asyncio.Task[Metrics] | None = None
        self._requests: asyncio.Queue[tuple[int, asyncio.Future[None]]] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._runner_thread: _LoopThread | None = None
        self._n_interactions = 0
        self._n_correct = 0

    # -- state -----------------------------------------------------------------------------------
    @property
    def world(self) -> World:
        """The world of agents, routers, buffers and filter rules (builds it on first use)."""
        if self._world is None:
            self._sync(self.astart())
        assert self._world is not None
        return self._world

    @property
    def run_id(self) -> str | None:
        return self._ctx.run_id if self._ctx is not None else self._run_id

    @property
    def trace_path(self) -> Path | None:
        """The trace database (known once the run has started)."""
        return self._path

    @property
    def n_steps(self) -> int:
        """Forward steps in the whole run (one per batch of ``propagation.update_size``)."""
        if self._prepared is None:
            self._sync(self.astart())
        assert self._prepared is not None
        return len(self._prepared.batches)

    @property
    def steps_done(self) -> int:
        """Forward steps completed so far."""
        return self._next_step

    @property
    def finished(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> RunResult | None:
        """The ``RunResult`` once the run has finished (after evaluation), else None."""
        return self._result

    # -- async API -------------------------------------------------------------------------------
    async def astart(self) -> None:
        """Load the data, open the trace and build the world (done by the first step if not)."""
        if self._task is not None:
            self._check_loop()
            assert self._ready is not None
            await self._wait(self._ready)
            return
        self._open()
        loop = asyncio.get_running_loop()
        self._home = loop
        self._requests = asyncio.Queue()
        self._ready = loop.create_future()
        ctx = self._require_ctx()
        assert self._path is not None
        self._task = loop.create_task(supervised(ctx, self._path, self._paused_body))
        await self._wait(self._ready)

    async def astep(self) -> int:
        """Run one forward step; return how many steps are done. After the last, evaluate."""
        await self.arun(steps=1)
        return self._next_step

    async def arun(self, steps: int | None = None) -> RunResult | None:
        """Run ``steps`` more forward steps (all that are left when None).

        When the last step is done the run is evaluated, marked finished and closed, and its
        ``RunResult`` returned; a paused run returns None.
        """
        if steps is not None and steps < 1:
            raise ValueError("steps must be at least 1 (or None for the rest of the run)")
        self._check_open()
        if steps is None and self._task is None:  # the whole run at once: nothing to pause
            self._open()
            assert self._path is not None
            metrics = await supervised(self._require_ctx(), self._path, self._whole_body)
            return self._finish(metrics)
        await self.astart()
        assert self._prepared is not None and self._requests is not None and self._task
        total = len(self._prepared.batches)
        stop = total if steps is None else min(total, self._next_step + steps)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._requests.put_nowait((stop, done))
        if stop < total:
            await self._wait(done)
            return None
        return self._finish(await self._wait(self._task))

    async def ametrics(self) -> Metrics:
        """Model → metric → value: the final test metrics once finished; before that, RecNet's
        metrics on the test candidates with the world as it is now (nothing is written to the
        trace; an LLM brain makes its rank calls) and the training choice accuracy so far."""
        if self._result is not None:
            return self._result.metrics
        await self.astart()
        self._check_open()
        ctx, world, prepared = self._require_ctx(), self._world, self._prepared
        assert world is not None and prepared is not None
        metrics, _ = await rank_with_brain(
            ctx,
            world,
            prepared.split,
            prepared.test_candidates,
            which="test",
            step=self._next_step,
            record=False,
        )
        training = {"steps_done": float(self._next_step)}
        if self._n_interactions:
            training["choice_accuracy"] = self._n_correct / self._n_interactions
        return {"recnet": metrics, "training": training}

    async def aclose(self) -> None:
        """Stop early: the run is recorded as ``stopped`` (``recnet simulate --resume`` goes on)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None and not self._task.done():
            self._check_loop()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- sync API --------------------------------------------------------------------------------
    def start(self) -> None:
        self._sync(self.astart())

    def step(self) -> int:
        """Run one forward step (see ``astep``)."""
        return self._sync(self.astep())

    def run(self, steps: int | None = None) -> RunResult | None:
        """Run ``steps`` more steps, or the rest of the run (see ``arun``)."""
        return self._sync(self.arun(steps))

    def metrics(self) -> Metrics:
        """See ``ametrics``."""
        return self._sync(self.ametrics())

    def close(self) -> None:
        """See ``aclose``."""
        if self._task is not None or self._runner_thread is not None:
            self._sync(self.aclose())
        self._closed = True
        self._shutdown_thread()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Simulation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the run ---------------------------------------------------------------------------------
    def _open(self) -> None:
        """Open the run (trace, lease, brain); ``supervised`` closes and releases them."""
        self._started = time.perf_counter()
        ctx, path, prepared = open_run(
            self.scenario,
            trace_path=self._trace_path,
            on_step=self._on_step,
            on_prepared=self._on_prepared,
            run_id=self._run_id,
        )
        self._ctx, self._path, self._prepared = ctx, path, prepared

    async def _build(self):
        ctx, prepared = self._require_ctx(), self._prepared
        assert prepared is not None
        world = await initialise_world(ctx, prepared, build_embedder(self.scenario))
        loop, results = build_loop(ctx, world, prepared)
        loop.on_commit = self._counting(loop.on_commit)
        self._world = world
        return loop, results

    async def _whole_body(self) -> Metrics:
        loop, results = await self._build()
        await loop.run(0)
        self._next_step = len(loop.batches)
        return results

    async def _paused_body(self) -> Metrics:
        """Build the world, then run the steps each request asks for until the last one."""
        assert self._ready is not None and self._requests is not None
        loop, results = await self._build()
        self._ready.set_result(None)
        total = len(loop.batches)
        while True:
            stop, done = await self._requests.get()
            await loop.run(self._next_step, stop=stop)
            self._next_step = stop
            if stop >= total:
                return results
            self._require_ctx().store.flush()  # paused: readers see every completed step
            if not done.done():
                done.set_result(None)

    async def _wait(self, future: asyncio.Future[T]) -> T:
        """Wait for ``future`` or for the run task to end (then raise how it ended)."""
        task = self._task
        assert task is not None
        try:
            await asyncio.wait({future, task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the caller was cancelled (Ctrl-C): stop the run too
            self._closed = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        if future.done():
            return future.result()
        self._closed = True
        return task.result()  # type: ignore[return-value]  # raises how the run ended

    def _finish(self, metrics: Metrics) -> RunResult:
        ctx, prepared = self._require_ctx(), self._prepared
        assert prepared is not None and self._path is not None
        self._closed = True
        self._result = _result(ctx, self._path, prepared, metrics, self._started)
        return self._result

    def _counting(self, commit: Callable[[StepState], None]) -> Callable[[StepState], None]:
        """Wrap the loop's commit hook to count training choices (for ``metrics``)."""

        def counted(state: StepState) -> None:
            commit(state)
            self._n_interactions += len(state.interactions)
            self._n_correct += state.n_correct

        return counted

    def _require_ctx(self) -> RunContext:
        assert self._ctx is not None, "astart() first"
        return self._ctx

    def _check_open(self) -> None:
        if self._closed or self._result is not None:
            state = "finished" if self._result is not None else "closed (or it failed)"
            raise SimulationClosed(
                f"this simulation is {state}",
                "start a new Simulation (or `recnet simulate --resume` a stopped trace)",
            )

    def _check_loop(self) -> None:
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if self._home is not None and current is not self._home:
            raise _other_form()

    def _sync(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` to completion on this simulation's private loop thread."""
        if self._home is not None and (
            self._runner_thread is None or self._home is not self._runner_thread.loop
        ):
            coroutine.close()
            raise _other_form()
        if self._runner_thread is None:
            self._runner_thread = _LoopThread()
        return self._runner_thread.run(coroutine)

    def _shutdown_thread(self) -> None:
        if self._runner_thread is not None and not self._runner_thread.is_current():
            self._runner_thread.stop()
            self._runner_thread = None


def _other_form() -> RecnetError:
    return RecnetError(
        "this simulation was started with the other form (sync vs async)",
        "use one form per simulation: either sim.step()/sim.run() or "
        "await sim.astep()/await sim.arun()",
    )


class _LoopThread:
    """An event loop running in a daemon thread; ``run`` blocks the caller until a coroutine ends.

    Used by the sync API so that it works whether or not the calling thread already runs a loop
    (a Jupyter kernel does), and so that every call shares one loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="recnet-simulation", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def is_current(self) -> bool:
        return threading.current_thread() is self.thread

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self.is_current():
            coroutine.close()
            raise RuntimeError("use the async form (await sim.astep()) inside the simulation loop")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()

"""The phase loop as a LangGraph ``StateGraph`` at phase level.

Pipeline position: driven by the runner after the world is built. Nodes are phases, never agents:
each node hands a whole batch of agents to the brain (a LangGraph task costs ~0.2-1 ms, so one task
per agent would dominate a run). The graph state is only the step counter; the world and the
current ``StepState`` live in the ``PhaseLoop`` object the nodes close over.

    start_step → interact → perceive → integrate → multicast → receive → [backward] → commit
        ↑__________________________________________________________________________|  → evaluate
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from recnet.data.types import Interaction
from recnet.phases.forward import ForwardPhase, StepState

BackwardHook = Callable[[StepState], Awaitable[None]]
EvaluateHook = Callable[[int], Awaitable[None]]
CommitHook = Callable[[StepState], None]
PhaseHook = Callable[[int, str], None]  # (step, phase) as each node starts
NodeFunction = Callable[["LoopState"], Awaitable["LoopState"]]


class LoopState(TypedDict):
    step: int


class PhaseLoop:
    """Runs the forward phase over ``batches`` (one batch per step) from ``first_step`` on."""

    def __init__(
        self,
        forward: ForwardPhase,
        batches: Sequence[Sequence[Interaction]],
        *,
        on_commit: CommitHook,
        evaluate: EvaluateHook,
        backward: BackwardHook | None = None,
        clock: Callable[[], str],
        on_phase: PhaseHook | None = None,
    ) -> None:
        self.forward = forward
        self.batches = batches
        self.on_commit = on_commit
        self.evaluate = evaluate
        self.backward = backward
        self.clock = clock
        self.on_phase = on_phase
        self.current: StepState | None = None
        self.stop = len(batches)  # run() pauses before this step (evaluates when it is the end)
        self.graph = self._build()

    def step_nodes(self) -> list[tuple[str, NodeFunction]]:
        """One step's nodes in order: the forward sub-phases (``ForwardPhase.SUBPHASES``), the
        backward hook when there is one, then commit. The graph and its recursion limit are
        derived from this list."""
        nodes = [("start_step", self._start_step)]
        nodes += [(name, self._forward_node(name)) for name in ForwardPhase.SUBPHASES]
        if self.backward is not None:
            nodes.append(("backward", self._backward))
        nodes.append(("commit", self._commit))
        return nodes

    def _build(self):
        graph = StateGraph(LoopState)
        nodes = self.step_nodes()
        for name, node in nodes:
            graph.add_node(name, self._tracked(name, node))
        graph.add_node("evaluate", self._tracked("evaluate", self._evaluate))
        first, last = nodes[0][0], nodes[-1][0]
        graph.add_conditional_edges(START, self._has_steps_left, {True: first, False: "evaluate"})
        for (a, _), (b, _) in itertools.pairwise(nodes):
            graph.add_edge(a, b)
        graph.add_conditional_edges(
            last, self._after_commit, {"next": first, "pause": END, "end": "evaluate"}
        )
        graph.add_edge("evaluate", END)
        return graph.compile()

    async def run(self, first_step: int = 0, stop: int | None = None) -> None:
        """Run steps ``first_step`` .. ``stop - 1``; evaluate when that reaches the last batch.

        ``stop=None`` runs to the end. A paused loop continues with ``run(stop_before_step)``.
        """
        self.stop = len(self.batches) if stop is None else min(stop, len(self.batches))
        remaining = max(0, self.stop - first_step)
        nodes_per_step = len(self.step_nodes())
        await self.graph.ainvoke(
            {"step": first_step},
            config={"recursion_limit": remaining * nodes_per_step + 10},
        )

    def _tracked(self, phase: str, node: NodeFunction) -> NodeFunction:
        """``node`` reporting ``(step, phase)`` to ``on_phase`` before it runs (for error lines)."""

        async def run(state: LoopState) -> LoopState:
            if self.on_phase is not None:
                self.on_phase(state["step"], phase)
            return await node(state)

        return run

    # nodes -------------------------------------------------------------------------------------
    def _has_steps_left(self, state: LoopState) -> bool:
        return state["step"] < len(self.batches)

    def _after_commit(self, state: LoopState) -> str:
        if state["step"] >= len(self.batches):
            return "end"
        return "next" if state["step"] < self.stop else "pause"

    def _state(self) -> StepState:
        assert self.current is not None, "start_step must run first"
        return self.current

    async def _start_step(self, state: LoopState) -> LoopState:
        step = state["step"]
        self.current = StepState(step, self.batches[step], started_at=self.clock())
        return state

    def _forward_node(self, name: str) -> NodeFunction:
        """A node that runs one forward sub-phase (a method of ``ForwardPhase``, sync or async)."""
        method = getattr(self.forward, name)

        async def node(state: LoopState) -> LoopState:
            result = method(self._state())
            if inspect.isawaitable(result):
                await result
            return state

        node.__name__ = name
        return node

    async def _backward(self, state: LoopState) -> LoopState:
        assert self.backward is not None
        await self.backward(self._state())
        return state

    async def _commit(self, state: LoopState) -> LoopState:
        self.on_commit(self._state())
        return {"step": state["step"] + 1}

    async def _evaluate(self, state: LoopState) -> LoopState:
        await self.evaluate(state["step"] - 1)
        return state

"""The phase loop as a LangGraph ``StateGraph`` at phase level.

Pipeline position: driven by the runner after the world is built. Nodes are phases, never agents:
each node hands a whole batch of agents to the brain (a LangGraph task costs ~0.2-1 ms, so one task
per agent would dominate a run). The graph state is only the step counter; the world and the
current ``StepState`` live in the ``PhaseLoop`` object the nodes close over.

    start_step → interact → perceive → integrate → multicast → receive → [backward] → commit
        ↑__________________________________________________________________________|  → evaluate
"""

from __future__ import annotations

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

    def _build(self):
        graph = StateGraph(LoopState)
        graph.add_node("start_step", self._tracked("start_step", self._start_step))
        graph.add_node("interact", self._tracked("interact", self._interact))
        graph.add_node("perceive", self._tracked("perceive", self._perceive))
        graph.add_node("integrate", self._tracked("integrate", self._integrate))
        graph.add_node("multicast", self._tracked("multicast", self._multicast))
        graph.add_node("receive", self._tracked("receive", self._receive))
        graph.add_node("commit", self._tracked("commit", self._commit))
        graph.add_node("evaluate", self._tracked("evaluate", self._evaluate))
        graph.add_conditional_edges(
            START, self._has_steps_left, {True: "start_step", False: "evaluate"}
        )
        graph.add_edge("start_step", "interact")
        graph.add_edge("interact", "perceive")
        graph.add_edge("perceive", "integrate")
        graph.add_edge("integrate", "multicast")
        graph.add_edge("multicast", "receive")
        if self.backward is not None:
            graph.add_node("backward", self._tracked("backward", self._backward))
            graph.add_edge("receive", "backward")
            graph.add_edge("backward", "commit")
        else:
            graph.add_edge("receive", "commit")
        graph.add_conditional_edges(
            "commit", self._after_commit, {"next": "start_step", "pause": END, "end": "evaluate"}
        )
        graph.add_edge("evaluate", END)
        return graph.compile()

    async def run(self, first_step: int = 0, stop: int | None = None) -> None:
        """Run steps ``first_step`` .. ``stop - 1``; evaluate when that reaches the last batch.

        ``stop=None`` runs to the end. A paused loop continues with ``run(stop_before_step)``.
        """
        self.stop = len(self.batches) if stop is None else min(stop, len(self.batches))
        remaining = max(0, self.stop - first_step)
        nodes_per_step = 8 if self.backward else 7
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

    async def _interact(self, state: LoopState) -> LoopState:
        await self.forward.interact(self._state())
        return state

    async def _perceive(self, state: LoopState) -> LoopState:
        self.forward.perceive(self._state())
        return state

    async def _integrate(self, state: LoopState) -> LoopState:
        await self.forward.integrate(self._state())
        return state

    async def _multicast(self, state: LoopState) -> LoopState:
        self.forward.multicast(self._state())
        return state

    async def _receive(self, state: LoopState) -> LoopState:
        await self.forward.receive(self._state())
        return state

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

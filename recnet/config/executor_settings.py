"""Pydantic model of a scenario's ``executor`` block: where independent work runs.

Pipeline position: part of the scenario (``recnet.config.scenario.Scenario.executor``); read by
``recnet.exec.base.build_executor`` when the brain is built.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from recnet.config.checks import NonEmpty
from recnet.config.llm_settings import Section
from recnet.exec.collector import DEFAULT_THRESHOLD


class ExecutorSettings(Section):
    """Executor of a step's independent work (the offline brain's merges)."""

    kind: Literal["local", "ray"] = Field(
        "local",
        description="local = in this process; ray = spread over a Ray cluster as tasks (needs "
        "pip install -e '.[ray]'). The trace is the same either way; the LLM brain does not use "
        "it (its calls are concurrent already).",
    )
    address: NonEmpty | None = Field(
        None,
        description="With kind=ray: the cluster to join (ray://host:10001 or auto); unset = the "
        "Ray instance already running in this process, else a new local one.",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="With kind=ray and no address: CPUs of the local instance."
    )
    chunks: int | None = Field(
        None,
        ge=1,
        description="With kind=ray: tasks per batch of work (unset = the cluster's CPU count).",
    )
    blas_threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto",
        description="Threads numpy's BLAS may use in this process while the run is open. auto = "
        "1 from the first step on in a world of fewer than 20,000 clients (its matrix products "
        "are small and a thread pool only spins: the MovieLens main job uses 40 % less CPU and "
        "0-11 % less wall time, two runs side by side 29 % less), the library's default (one "
        "per core) in a larger world (30k agents: 5 % faster with it); a number = that many "
        "threads; null = the library's default. Results are the same.",
    )
    gc_threshold: int | None = Field(
        DEFAULT_THRESHOLD,
        ge=1,
        description="Young-generation threshold of Python's cyclic garbage collector while the "
        "run is open (net container allocations between collections; Python's default is 700). "
        "Raised, the collector lets a step's short-lived messages die before it runs, instead of "
        "promoting them and then traversing the whole world in full collections: its share of a "
        "30k-agent run falls from 14 % to 3 % (experiments/bench_gc.py). null = leave the "
        "interpreter's setting. Results and peak memory are the same.",
    )
    min_items: int = Field(
        256,
        ge=1,
        description="With kind=ray: batches smaller than this run in-process (a Ray task costs "
        "about a millisecond).",
    )

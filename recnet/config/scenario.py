"""Pydantic models of a scenario file: with ``recnet.config.llm_settings`` (the ``llm`` block), the
one place every option is documented.

Pipeline position: first. ``recnet.config.loader`` reads YAML, applies ``--set`` overrides and
validates into ``Scenario``; everything downstream receives typed, checked settings. Unknown keys
are rejected (``extra="forbid"``) so a typo never silently falls back to a default. The README's
option table is generated from these models (``recnet options``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from recnet.config.checks import (
    INITIAL_FILTER_RULES,
    MAX_SEED,
    BaselineName,
    CriticName,
    Cutoffs,
    DatasetName,
    EnvName,
    FlushOn,
    NonEmpty,
    RunName,
    needs_path,
    unique,
    user_init_fits,
    world_bounds,
)
from recnet.config.executor_settings import ExecutorSettings
from recnet.config.llm_settings import BudgetSettings as BudgetSettings
from recnet.config.llm_settings import CacheSettings as CacheSettings
from recnet.config.llm_settings import EndpointSettings as EndpointSettings
from recnet.config.llm_settings import LLMSettings, Section
from recnet.config.llm_settings import RateLimitSettings as RateLimitSettings
from recnet.config.llm_settings import RetrySettings as RetrySettings
from recnet.config.propagation_settings import PropagationSettings as PropagationSettings
from recnet.config.synthetic_settings import SyntheticSettings
from recnet.config.trace_settings import TraceSettings


class DatasetSettings(Section):
    """Where interactions and item metadata come from."""

    kind: DatasetName = Field(
        "movielens",
        description="Loader: MovieLens archive (movielens), RecBole atomic files (recbole), "
        "synthetic, or a registered name (recnet.registry.DATASETS).",
    )
    variant: Literal["ml-latest-small", "ml-100k", "ml-1m"] = Field(
        "ml-latest-small", description="MovieLens release (kind=movielens)."
    )
    path: Path | None = Field(
        None,
        description="Explicit zip or folder. For recbole: the folder holding <name>.inter etc. "
        "Relative paths are resolved against the scenario file's folder.",
    )
    name: NonEmpty | None = Field(
        None, description="RecBole dataset name (file stem); defaults to the folder name."
    )
    data_dir: Path | None = Field(
        None,
        description="Cache folder searched and downloaded into; else $RECNET_DATA_DIR, "
        "else ~/.cache/recnet.",
    )
    download: bool = Field(
        True, description="Download from GroupLens (sha256-checked) when nothing is found locally."
    )
    min_rating: float | None = Field(
        None, description="Keep only ratings >= this value as positive interactions."
    )
    max_users: int | None = Field(
        None, ge=1, description="Keep a seeded random subsample of this many users."
    )
    max_interactions_per_user: int | None = Field(
        None, ge=3, description="Keep only each user's most recent N interactions."
    )
    short_users: Literal["error", "drop"] = Field(
        "error",
        description="Users with fewer than 3 interactions cannot be split leave-one-out: stop "
        "with an error naming them, or drop them.",
    )
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)

    @model_validator(mode="after")
    def _recbole_path(self) -> DatasetSettings:
        needs_path(self.kind, self.path)
        return self


class BufferSettings(Section):
    """A client's bounded buffer of incoming router messages."""

    enabled: bool = Field(
        True,
        description="Hold router messages in the buffer and merge them in batches (see "
        "flush_on); false removes the buffer: every message is merged on its own, in arrival "
        "order (one merge per message; capacity, flush_on and overflow are ignored). With "
        "filters.enabled: false this is the 'without buffer and filter' ablation.",
    )
    capacity: int = Field(32, ge=1, description="Messages held before the buffer is full.")
    flush_on: FlushOn | None = Field(
        None,
        description="When a buffer is merged into the propagated profile: when full, just "
        "before its owner acts (chooses, is judged as a candidate, is ranked or ranks), and/or "
        "at the end of every step. None = [full, before_act] (lazy merge: a client that never "
        "acts never pays; the offline brain measured on par or better than merging at every "
        "step's end, see experiments/README.md).",
    )
    overflow: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest",
        description="What to drop when a message arrives at a full buffer that does not flush "
        "on 'full'.",
    )


class FilterSettings(Section):
    """Initial filter memory each client starts with (rules are ordered; first match decides)."""

    enabled: bool = Field(
        True,
        description="Apply filter rules at reception; false accepts every message and skips "
        "the max-share cap (the 'without buffer and filter' ablation, together with "
        "buffer.enabled: false).",
    )
    min_relevance: float = Field(
        0.05,
        ge=-1.0,
        le=1.0,
        description="Reject a message whose content (the router profile it carries) has a "
        "cosine to the client's original profile below this (0.05: rejects ~1 % of messages on "
        "ml-latest-small and ~2 % on the synthetic world without loss, see experiments/README.md).",
    )
    relevance: Literal["content", "routing_score"] = Field(
        "content",
        description="What min_relevance compares with its threshold: 'content' = cosine of the "
        "message's router profile to the client's original profile at reception; "
        "'routing_score' = the score the message was routed with (before issue 9; routing "
        "only sends above tau, so this rarely rejects anything).",
    )
    max_propagated_share: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Cap on the share of propagated weight in the propagated profile.",
    )
    recency_steps: int = Field(
        5, ge=1, description="Drop buffered messages older than this many steps."
    )
    conflict_threshold: float = Field(
        0.3,
        ge=0.0,
        description="Reject messages that push an attribute the client strongly "
        "dislikes (weight below minus this).",
    )
    max_rules: int = Field(
        8, ge=INITIAL_FILTER_RULES, description="Upper bound on rules in one filter memory."
    )


class WorldSettings(Section):
    """Agents and routers."""

    n_routers: int = Field(
        25,
        ge=1,
        description="Initial number of routers K: the attributes clustered by spherical k-means "
        "(in two levels above 2^26 attributes x K, from ~80k agents in bench_scale's worlds; "
        "experiments/README.md).",
    )
    min_routers: int = Field(2, ge=1, description="Lower bound on K after split/merge.")
    max_routers: int = Field(60, ge=1, description="Upper bound on K after split/merge.")
    profile_size: int = Field(
        48, ge=4, description="Attributes kept per client profile (a text profile's length budget)."
    )
    router_profile_size: int = Field(32, ge=4, description="Attributes kept per router profile.")
    user_init: Literal["neutral", "history"] = Field(
        "neutral",
        description="User profiles start neutral or from their first history items.",
    )
    user_init_items: int = Field(
        0, ge=0, description="With user_init=history: how many first items seed the profile."
    )
    buffer: BufferSettings = Field(default_factory=BufferSettings)
    filters: FilterSettings = Field(default_factory=FilterSettings)

    @model_validator(mode="after")
    def _bounds(self) -> WorldSettings:
        world_bounds(self.min_routers, self.n_routers, self.max_routers)
        user_init_fits(self.user_init, self.user_init_items)
        return self


class InteractionSettings(Section):
    """AgentCF-style interaction update (forward step 1)."""

    learning_rate: float = Field(
        0.3, gt=0.0, le=1.0, description="Reflection step when the user chose wrongly."
    )
    reinforce_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Reinforcement step when the user chose rightly."
    )
    item_absorb_rate: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="How much an item absorbs the profile of a user who chose it.",
    )
    popularity_weight: float = Field(
        0.2,
        ge=0.0,
        description="Weight of the popularity prior in the offline brain's score (0.2 measured "
        "best of 0.2/0.3/0.5/1.0 on ml-latest-small).",
    )
    propagated_weight: float = Field(
        2.0,
        ge=0.0,
        description="Weight of the propagated profile when a client is scored (2.0 measured "
        "best of 0.5/1/2/3 on the synthetic world; see experiments/README.md).",
    )
    short_term_items: int = Field(
        0,
        ge=0,
        description="A user's short-term memory (AgentCF): the last N items it chose in "
        "training, which its rankings (prequential, final, backward feedback) compare each "
        "candidate with; 0 keeps none. Its own choices during training do not use it.",
    )
    short_term_weight: float = Field(
        0.0,
        ge=0.0,
        description="Weight of the short-term memory in the offline brain's ranking score: "
        "+ weight x the mean cosine of a candidate with the remembered items (0.8 with 5 items "
        "measured best on ml-latest-small's held-out seeds; experiments/README.md).",
    )

    @model_validator(mode="after")
    def _short_term(self) -> InteractionSettings:
        if self.short_term_weight > 0 and self.short_term_items == 0:
            raise ValueError(
                "interaction.short_term_weight > 0 needs interaction.short_term_items > 0 "
                "(how many recent items a user remembers); set both, or the weight to 0"
            )
        return self


class BackwardSettings(Section):
    """Backward phase: feedback → gradient → optimize, validated (see recnet.phases.backward)."""

    enabled: bool = Field(False, description="Run the backward phase after forward steps.")
    critic: CriticName | None = Field(
        None,
        description="Who judges and edits modules: offline (counterfactual credit, rule-based "
        "edits), llm (the pack's gradient/optimize templates; needs an LLM brain), or a "
        "registered name (recnet.registry.CRITICS). Default: the brain's own.",
    )
    every: int = Field(
        10,
        ge=1,
        description="Run it after every N forward steps (10 keeps its cost on "
        "ml-latest-small to about half the forward phase's).",
    )
    select: Literal["all", "errors", "sample"] = Field(
        "errors",
        description="Which feedback predictions feed the gradient: all, the wrong "
        "ones, or a seeded sample of sample_size.",
    )
    sample_size: int = Field(8, ge=1, description="With select=sample: how many per step.")
    epsilon: float = Field(
        0.005, ge=0.0, description="Roll an optimisation back if validation NDCG drops more."
    )
    rollback_z: float = Field(
        0.0,
        ge=0.0,
        description="Roll back only when the fall also exceeds this many standard errors of the "
        "paired per-user change of validation NDCG@10 (1.645 = a one-sided 95 % test; 0 = the "
        "fall alone decides).",
    )
    max_calls: int | None = Field(
        None,
        ge=0,
        description="Separate budget for the backward phase: gradient and optimize "
        "operations (LLM calls with an LLM brain); once spent, backward work is skipped.",
    )
    feedback: Literal["step", "next"] = Field(
        "next",
        description="Predict on the step's own interactions (already learned by the "
        "forward phase) or on the next step's, before the forward phase learns them "
        "(prequential feedback).",
    )
    feedback_negatives: int = Field(
        4,
        ge=1,
        description="Sampled unseen items the true item competes with in a feedback prediction.",
    )
    tolerance: float = Field(
        0.01,
        ge=0.0,
        description="Offline gradient: a module whose removal changes the true "
        "item's score margin by less than this is judged neutral.",
    )
    validation_users: int | None = Field(
        None,
        ge=1,
        description="Validate optimisations on a seeded sample of this many users' "
        "validation lists (None = all).",
    )
    tau_step: float = Field(
        0.02, gt=0.0, description="How far one optimisation moves a router's tau."
    )
    tau_range: float = Field(
        0.1, ge=0.0, description="Optimised taus stay within propagation.tau +/- this."
    )
    split_spread: float = Field(
        0.6,
        ge=0.0,
        le=2.0,
        description="Split a router with negative credit when "
        "1 - mean cos(member, router) is at least this.",
    )
    merge_similarity: float = Field(
        0.95,
        ge=-1.0,
        le=1.0,
        description="Merge two routers whose profile embeddings have at least this cosine.",
    )
    max_router_ops: int = Field(
        3,
        ge=0,
        description="Routers rewritten, re-thresholded or split per backward round "
        "(strongest credit first); merges of near-duplicates come on top.",
    )


class PrequentialSettings(Section):
    """Test-then-train: rank a training interaction's true item before it is learned."""

    every: int | None = Field(
        None,
        ge=0,
        description="Rank every n-th training interaction (by stream position) against sampled "
        "unseen items before it is learned; 0 = off; null = 1 with the offline brain, 25 with "
        "an LLM brain (one rank call each, priced by the dry run).",
    )
    n_negatives: int = Field(
        19, ge=1, description="Sampled unseen items ranked against each evaluated interaction."
    )
    windows: int = Field(
        10, ge=1, description="Equal windows of steps the prequential metrics are reported for."
    )


class EvaluationSettings(Section):
    """Leave-one-out evaluation on fixed candidate lists."""

    n_negatives: int = Field(19, ge=1, description="Sampled negatives per test user.")
    ks: Cutoffs = Field(default_factory=lambda: [1, 5, 10], description="Cut-offs for metrics.")
    baselines: Annotated[list[BaselineName], AfterValidator(unique)] = Field(
        default_factory=lambda: ["popularity", "random"],
        description="Baselines scored on the same candidates: popularity, random, itemknn, "
        "bprmf, or a registered name (recnet.registry.BASELINES).",
    )
    negatives_from: Literal["unseen", "all"] = Field(
        "unseen", description="Sample negatives among items the user never chose, or any item."
    )
    max_test_users: int | None = Field(
        None, ge=1, description="Evaluate a seeded subsample of test users (cheaper LLM runs)."
    )
    prequential: PrequentialSettings = Field(default_factory=PrequentialSettings)


class EmbedderSettings(Section):
    """Embeddings for routing (attributes, routers, clients)."""

    kind: Literal["hashing", "openai"] = Field(
        "hashing", description="Hashing embedder (no download) or an OpenAI-compatible /embeddings."
    )
    dim: int = Field(256, ge=8, description="Hashing embedder dimension.")
    model: NonEmpty = Field("text-embedding-3-small", description="Model for kind=openai.")
    base_url: NonEmpty | None = Field(None, description="Endpoint for kind=openai.")
    api_key_env: EnvName = Field("OPENAI_API_KEY", description="Env var holding the API key.")


class Scenario(Section):
    """A whole simulation: data, world, phases, brain, evaluation and trace."""

    name: RunName = Field("scenario", description="Name used in run ids and file names.")
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="The one seed that drives every random choice in the run."
    )
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    world: WorldSettings = Field(default_factory=WorldSettings)
    interaction: InteractionSettings = Field(default_factory=InteractionSettings)
    propagation: PropagationSettings = Field(default_factory=PropagationSettings)
    backward: BackwardSettings = Field(default_factory=BackwardSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)


def flush_triggers(scenario: Scenario, brain_kind: str) -> set[str]:
    """When buffers flush: ``world.buffer.flush_on``, or its default: lazy merge, when the client
    is about to act (the offline brain's default chosen by measurement, issue 9; the argument
    keeps a per-brain default possible)."""
    chosen = scenario.world.buffer.flush_on
    if chosen is not None:
        return set(chosen)
    return {"full", "before_act"}  # both brains: merge when the client is about to act

"""Tables of the trace database (SQLAlchemy Core). The README's "Trace schema" documents them.

Pipeline position: written by the phase loop through a ``TraceStore``; read by ``recnet traces``,
by experiments and by anyone with ``sqlite3``. Every table carries ``run_id`` so several runs can
share a file. ``SCHEMA_VERSION`` increases with every named migration in ``MIGRATIONS``.

Foreign keys are declared (``run_id`` → ``runs``; agent, router and optimisation ids → their
tables; ``candidates`` and ``predictions`` hold dataset ids, not agent ids, so only their run),
so tools such as datasette link rows to their pages. SQLite does not enforce them (recnet never
turns ``PRAGMA foreign_keys`` on) and ``PRAGMA foreign_key_check`` finds none broken. The views
of ``recnet.trace.views`` answer the common questions in SQL.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("name", String, nullable=False),
    Column("applied_at", String, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("scenario_json", Text, nullable=False),  # the validated scenario, defaults filled in
    Column("versions_json", Text, nullable=False),  # recnet, python, key packages
    Column("dataset_source", String),
    Column("brain", String, nullable=False),  # offline | llm:<backend>
    Column("status", String, nullable=False),  # running | finished | failed | stopped
    Column("started_at", String, nullable=False),
    Column("finished_at", String),
    Column("last_completed_step", Integer, nullable=False, default=-1),
    Column("note", Text),  # why a run stopped, how to resume
    Column("trace_messages", String),  # level in force: all | sampled <share> | aggregate | none
    Column("trace_profiles", String),  # level in force: changed | sampled <share> | none
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("n_interactions", Integer, nullable=False),
    Column("first_timestamp", Integer),
    Column("last_timestamp", Integer),
    Column("n_correct", Integer, nullable=False),  # interaction choices the user got right
    Column("n_changed_attributes", Integer, nullable=False),
    Column("n_routers_updated", Integer, nullable=False),
    Column("n_messages", Integer, nullable=False),
    Column("n_accepted", Integer, nullable=False),
    Column("n_rejected", Integer, nullable=False),
    Column("n_dropped", Integer, nullable=False),
    Column("started_at", String, nullable=False),
    Column("finished_at", String, nullable=False),
)

agents = Table(
    "agents",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("agent_id", String, primary_key=True),  # "u:<user>", "i:<item>", "r:<n>"
    Column("kind", String, nullable=False),  # user | item | router
    Column("label", String),  # item title, router summary
    Column("created_step", Integer, nullable=False),
)

interactions = Table(
    "interactions",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("seq", Integer, primary_key=True),  # position in the chronological training stream
    Column("step", Integer, nullable=False),
    Column("user_id", String, nullable=False),
    Column("item_id", String, nullable=False),  # the item really chosen
    Column("negative_id", String, nullable=False),  # the sampled alternative
    Column("chosen_id", String, nullable=False),  # what the user agent picked
    Column("correct", Boolean, nullable=False),
    Column("timestamp", Integer),
    ForeignKeyConstraint(["run_id", "user_id"], ["agents.run_id", "agents.agent_id"]),
    ForeignKeyConstraint(["run_id", "item_id"], ["agents.run_id", "agents.agent_id"]),
    ForeignKeyConstraint(["run_id", "negative_id"], ["agents.run_id", "agents.agent_id"]),
    ForeignKeyConstraint(["run_id", "chosen_id"], ["agents.run_id", "agents.agent_id"]),
    sqlite_with_rowid=False,  # small rows: the primary key is the table (no second B-tree)
)

prequential = Table(
    "prequential",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("seq", Integer, primary_key=True),  # the interaction's position in the training stream
    Column("step", Integer, nullable=False),
    Column("user_id", String, nullable=False),
    Column("item_id", String, nullable=False),  # the item really chosen (not yet learned)
    Column("rank", Integer, nullable=False),  # 1-based rank of item_id among the candidates
    Column("n_candidates", Integer, nullable=False),
    Column("candidates_json", Text, nullable=False),  # item ids in scoring order, truth included
    ForeignKeyConstraint(["run_id", "user_id"], ["agents.run_id", "agents.agent_id"]),
    ForeignKeyConstraint(["run_id", "item_id"], ["agents.run_id", "agents.agent_id"]),
)

profile_versions = Table(
    "profile_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String, ForeignKey("runs.run_id"), nullable=False),
    Column("agent_id", String, nullable=False),
    Column("step", Integer, nullable=False),  # -1 = initialisation
    Column("kind", String, nullable=False),  # original | propagated
    Column("text", Text, nullable=False),
    Column("attributes_json", Text, nullable=False),  # {"genre:comedy": 0.41, ...}
    Column("reason", String, nullable=False),  # init | interact | merge | optimize
    ForeignKeyConstraint(["run_id", "agent_id"], ["agents.run_id", "agents.agent_id"]),
)

routers = Table(
    "routers",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("router_id", String, primary_key=True),
    Column("created_step", Integer, nullable=False),
    Column("retired_step", Integer),  # set when merged away or split
    Column("origin", String, nullable=False),  # init | split:<parent> | merge:<a>+<b>
    ForeignKeyConstraint(["run_id", "router_id"], ["agents.run_id", "agents.agent_id"]),
)

router_versions = Table(
    "router_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String, ForeignKey("runs.run_id"), nullable=False),
    Column("router_id", String, nullable=False),
    Column("step", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("parent_version", Integer),
    Column("text", Text, nullable=False),
    Column("attributes_json", Text, nullable=False),
    Column("tau", Float, nullable=False),
    Column("n_members", Integer, nullable=False),
    Column("reason", String, nullable=False),  # init | integrate | optimize | split | merge
    Column("gradient_id", Integer),  # the gradient that caused it (backward phase)
    ForeignKeyConstraint(["run_id", "router_id"], ["routers.run_id", "routers.router_id"]),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String, ForeignKey("runs.run_id"), nullable=False),
    Column("step", Integer, nullable=False),  # step the router sent it
    Column("router_id", String, nullable=False),
    Column("client_id", String, nullable=False),
    Column("score", Float, nullable=False),  # cos(router, client) at send time
    Column("status", String, nullable=False),  # buffered | accepted | rejected | dropped
    Column("rule_id", String),  # the filter rule (or buffer policy) that decided
    Column("decided_step", Integer),
    ForeignKeyConstraint(["run_id", "router_id"], ["routers.run_id", "routers.router_id"]),
    ForeignKeyConstraint(["run_id", "client_id"], ["agents.run_id", "agents.agent_id"]),
)

#: Per step, router and fate: how many messages were decided (levels ``sampled`` and
#: ``aggregate``; with ``all`` the ``messages`` rows hold the same and this table stays empty).
message_counts = Table(
    "message_counts",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("step", Integer, primary_key=True),  # the step the fate was decided
    Column("router_id", String, primary_key=True),  # the sender (a client in point_to_point)
    Column("status", String, primary_key=True),  # buffered | accepted | rejected | dropped
    Column("n", Integer, nullable=False),
    sqlite_with_rowid=False,  # small rows: the primary key is the table (no second B-tree)
)

filter_rule_versions = Table(
    "filter_rule_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String, ForeignKey("runs.run_id"), nullable=False),
    Column("agent_id", String, nullable=False),  # "*" = the default memory every client starts with
    Column("rule_id", String, nullable=False),
    Column("step", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("parent_version", Integer),
    Column("position", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("executable_json", Text),  # {"kind": "min_relevance", "threshold": 0.05} or null
    Column("active", Boolean, nullable=False),
    Column("reason", String, nullable=False),  # init | optimize | rollback
    Column("gradient_id", Integer),
)

# One row per candidate list, its item ids in list order as JSON. A row per candidate repeated the
# run id, split and user id for each of its 20 candidates: a fifth of a 30k-agent trace, ~0.9 GB
# at a million agents. The view ``candidates`` (``recnet.trace.views``) shows the lists one row per
# candidate, as traces before schema version 11 stored them. WITHOUT ROWID: the primary key is the
# table itself, not a second B-tree beside it.
candidate_lists = Table(
    "candidate_lists",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("split", String, primary_key=True),  # test | valid
    Column("user_id", String, primary_key=True),
    Column("items_json", Text, nullable=False),  # ["1193", "661", ...]: dataset item ids
    Column("positive", Integer),  # position of the held-out item in the list (null: not in it)
    sqlite_with_rowid=False,
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String, ForeignKey("runs.run_id"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("split", String, nullable=False),  # test | valid | feedback
    Column("model", String, nullable=False),  # recnet | popularity | random | ...
    Column("user_id", String, nullable=False),
    Column("true_item", String, nullable=False),
    Column("ranking_json", Text, nullable=False),  # candidate ids, best first
    Column("scores_json", Text),
    Column("rank", Integer, nullable=False),  # 1-based rank of the true item
    Column("reasoning", Text),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("split", String, primary_key=True),
    Column("model", String, primary_key=True),
    Column("metric", String, primary_key=True),  # ndcg@10, hr@5, mrr, ...
    Column("value", Float, nullable=False),
    # Why the value is not the model's own: answers that fell back, answers replayed from another
    # server (``fallback: rank 84/84``); NULL when every answer was the model's.
    Column("flag", String),
)

Index("ix_profile_versions_agent", profile_versions.c.run_id, profile_versions.c.agent_id)
Index("ix_router_versions_router", router_versions.c.run_id, router_versions.c.router_id)
Index("ix_messages_step", messages.c.run_id, messages.c.step)
Index("ix_messages_client", messages.c.run_id, messages.c.client_id)
Index("ix_rules_agent", filter_rule_versions.c.run_id, filter_rule_versions.c.agent_id)
Index("ix_predictions_user", predictions.c.run_id, predictions.c.user_id)

llm_calls = Table(
    "llm_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String, ForeignKey("runs.run_id"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("phase", String),  # interact | integrate | receive | evaluate | backward | init
    Column("operation", String, nullable=False),  # extract | summarize | merge | rank | ...
    Column("agent_id", String),
    Column("pack_name", String),
    Column("pack_version", String),
    Column("pack_hash", String),
    Column("model", String),
    Column("request_key", String),  # sha256 of the canonical request (the cache key)
    Column("messages_json", Text, nullable=False),  # never contains keys or auth headers
    Column("raw_response", Text),
    Column("parsed_ok", Boolean, nullable=False),
    Column("tokens_in", Integer),
    Column("tokens_out", Integer),
    Column("latency_ms", Float),
    Column("cache_hit", Boolean, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("repairs", Integer, nullable=False, default=0),
    Column("fallback", Boolean, nullable=False, default=False),
    Column("error", Text),
    Column("created_at", String, nullable=False),
)

Index("ix_llm_calls_step", llm_calls.c.run_id, llm_calls.c.step)

# -- backward phase (schema version 2) -------------------------------------------------------------
# Ids below are run-local counters (composite keys with run_id), so a version row can name the
# gradient that caused it before anything is written.

gradients = Table(
    "gradients",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("gradient_id", Integer, primary_key=True, autoincrement=False),
    Column("step", Integer, nullable=False),
    # The prediction it came from: the predictions row (split='feedback') of this run, step,
    # user_id and true_item; seq is the interaction's position in the training stream.
    Column("seq", Integer),
    Column("user_id", String, nullable=False),
    Column("true_item", String, nullable=False),
    Column("chosen_item", String, nullable=False),  # the item ranked first
    Column("rival_item", String, nullable=False),  # chosen when wrong, else the best other item
    Column("reward", Float, nullable=False),  # L = 1 when chosen == true, else 0
    Column("rank", Integer, nullable=False),  # 1-based rank of the true item
    Column("module", String, nullable=False),  # propagated_profile | filter_memory | router
    Column("target_id", String, nullable=False),  # client agent id or router id
    Column("judgement", String, nullable=False),  # positive | neutral | negative
    Column("effect", Float),  # offline: margin change the module caused (true − rival score)
    Column("reason", Text, nullable=False),
    Column("suggestion", Text, nullable=False),  # "no adjustment" when none
    ForeignKeyConstraint(["run_id", "user_id"], ["agents.run_id", "agents.agent_id"]),
)

optimizations = Table(
    "optimizations",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("optimization_id", Integer, primary_key=True, autoincrement=False),
    Column("step", Integer, nullable=False),
    Column("batch", Integer, nullable=False),  # optimisations validated (kept/rolled back) together
    Column("module", String, nullable=False),  # propagated_profile | filter_memory | router
    Column("target_id", String, nullable=False),
    Column("operation", String, nullable=False),  # rewrite | rules | tau | split | merge
    Column("gradient_ids_json", Text, nullable=False),  # the batched gradients it applied
    Column("before_json", Text, nullable=False),
    Column("after_json", Text, nullable=False),
    Column("status", String, nullable=False),  # kept | rolled_back
    Column("valid_before", Float),  # validation NDCG@10 of the batch without / with it
    Column("valid_after", Float),
    Column("reason", Text),  # why kept / rolled back, in words (records.validation_reason)
)

router_operations = Table(
    "router_operations",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("operation_id", Integer, primary_key=True, autoincrement=False),
    Column("step", Integer, nullable=False),
    Column("optimization_id", Integer, nullable=False),
    Column("operation", String, nullable=False),  # rewrite | tau | split | merge
    Column("router_ids_json", Text, nullable=False),  # routers before: ["r:3"] or ["r:3", "r:7"]
    Column("result_ids_json", Text, nullable=False),  # routers after: ["r:30", "r:31"] for a split
    Column("before_json", Text, nullable=False),  # {router: {profile, tau, n_members}}
    Column("after_json", Text, nullable=False),
    Column("gradient_id", Integer),
    Column("status", String, nullable=False),  # kept | rolled_back
    ForeignKeyConstraint(
        ["run_id", "optimization_id"], ["optimizations.run_id", "optimizations.optimization_id"]
    ),
)

backward_steps = Table(
    "backward_steps",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("n_predictions", Integer, nullable=False),  # feedback predictions made
    Column("n_correct", Integer, nullable=False),  # reward L = 1
    Column("mean_rank_signal", Float, nullable=False),  # mean 1/rank
    Column("n_selected", Integer, nullable=False),  # predictions that fed the gradient
    Column("n_gradients", Integer, nullable=False),  # module judgements
    Column("n_negative", Integer, nullable=False),
    Column("n_optimizations", Integer, nullable=False),
    Column("n_kept", Integer, nullable=False),
    Column("n_rolled_back", Integer, nullable=False),
    Column("calls", Integer, nullable=False),  # gradient + optimize operations this step
    Column("skipped", String),  # why work was skipped (budget), else null
    Column("started_at", String, nullable=False),
    Column("finished_at", String, nullable=False),
)

Index("ix_gradients_target", gradients.c.run_id, gradients.c.target_id)
Index("ix_optimizations_target", optimizations.c.run_id, optimizations.c.target_id)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("step", Integer, primary_key=True),  # the last completed step the state belongs to
    Column("created_at", String, nullable=False),
    Column("format", String, nullable=False),  # "pickle/2+zstd" (or older "pickle/2"), ";parts=N"
    Column("state", LargeBinary, nullable=False),  # world, phase counters, brain counters
)

# A checkpoint larger than one SQLite value (1 GB) is cut into parts: part 0 is checkpoints.state
# (format "pickle/2+zstd;parts=N"), parts 1..N-1 are rows here, queued before the checkpoints row.
checkpoint_parts = Table(
    "checkpoint_parts",
    metadata,
    Column("run_id", String, ForeignKey("runs.run_id"), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("part", Integer, primary_key=True),  # 1..N-1
    Column("data", LargeBinary, nullable=False),
)

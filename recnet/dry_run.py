"""Cost preview: how many LLM calls and tokens a scenario would take, before anything is spent.

Pipeline position: behind ``recnet simulate --dry-run`` and ``recnet check``. The offline brain
runs the scenario (no network) with the LLM brain's buffer policy (lazy merge unless
``world.buffer.flush_on`` says otherwise) and counts, per operation, the calls the LLM brain's
policy would make (``recnet.brain.call_plan``: fused choose+merge and reflection, reflection only
after wrong choices, batched summarize/merge/extract, as ``llm.*`` sets them). Each call is priced
in tokens by rendering the prompt pack's template with placeholder text as long as the bounded
prompt texts (``llm.max_profile_chars``, ``llm.max_message_chars``) plus the output schema, and a
typical answer length per operation. The estimate is a planning figure: real prompts vary with
profile lengths, real answers with the model, and the LLM's own right/wrong choices decide how
many reflections run (the offline brain's stand in for them). Repairs are not in the estimate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from rich.table import Table

from recnet.brain.base import OperationCounts
from recnet.brain.llm_text import TREND_ATTRIBUTES, with_recent_text, with_trend_text
from recnet.config.scenario import Scenario, flush_triggers
from recnet.eval.prequential import prequential_every
from recnet.llm.pack import PromptPack, load_pack
from recnet.runner import RunResult
from recnet.world.rules import default_rules

CHARS_PER_TOKEN = 4
#: a router trend as a rank prompt names it (``propagation.trend_share`` > 0), typical names
SAMPLE_TREND = {f"tag:{'x' * 14}{k}": 1.0 for k in range(TREND_ATTRIBUTES)}
#: a remembered item as a rank prompt names it (``interaction.short_term_items``), a typical title
SAMPLE_ITEM_LABEL = "x" * 30
TOKENS_PER_WORD = 1.4

#: Expected answer tokens per call, by operation (``words`` = the profile length budget in words,
#: ``batch`` = agents per batched call, ``n`` = candidates of a ranking).
OUTPUT_TOKENS: Mapping[str, str] = {
    "predict": "40",
    "rank": "8 * n + 30",
    "choose_merge": "60 + words",
    "reflect_user": "20 + words",
    "reflect_item": "20 + words",
    "reflect_fused": "3 * (words + 60)",
    "extract": "60",
    "extract_batch": "60 * batch",
    "summarize": "words",
    "summarize_batch": "words * batch",
    "merge": "40 + words",
    "merge_batch": "(40 + words) * batch",
    "gradient": "200",
    "optimize": "120",
}

#: The offline brain's operations mapped to LLM calls when it does not count a call plan (a
#: custom brain): the paper's one call per operation, plus an extract per reflection.
LLM_CALLS_PER_OPERATION: Mapping[str, Mapping[str, float]] = {
    "predict": {"predict": 1},
    "reflect_user": {"reflect_user": 1, "extract": 1},
    "reflect_item": {"reflect_item": 1, "extract": 1},
    "summarize": {"summarize": 1},
    "merge": {"merge": 1},
    "rank": {"rank": 1},
    "gradient": {"gradient": 1},
    "optimize": {"optimize": 1},
}


@dataclass(frozen=True)
class OperationEstimate:
    operation: str
    calls: int
    prompt_tokens: int  # per call
    output_tokens: int  # per call, expected


@dataclass(frozen=True)
class Estimate:
    operations: list[OperationEstimate]
    model: str
    train_interactions: int
    steps: int
    max_output_tokens: int
    price: tuple[float, float] | None  # USD per 1M input / output tokens

    @property
    def calls(self) -> int:
        return sum(o.calls for o in self.operations)

    @property
    def prompt_tokens(self) -> int:
        return sum(o.calls * o.prompt_tokens for o in self.operations)

    @property
    def output_tokens(self) -> int:
        return sum(o.calls * o.output_tokens for o in self.operations)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def cost_of(self, prompt: float, output: float) -> float | None:
        if self.price is None:
            return None
        return (prompt * self.price[0] + output * self.price[1]) / 1e6

    @property
    def cost(self) -> float | None:
        return self.cost_of(self.prompt_tokens, self.output_tokens)


def dry_run_scenario(scenario: Scenario) -> Scenario:
    """The offline copy of ``scenario`` whose run the estimate counts: same data and seed, the
    offline brain, and the buffer triggers the LLM brain would use."""
    offline = scenario.model_copy(deep=True)
    offline.llm.backend = "offline"
    offline.world.buffer.flush_on = sorted(flush_triggers(scenario, "llm"))  # type: ignore[assignment]
    return offline


def estimate(scenario: Scenario, offline: RunResult) -> Estimate:
    """Turn an offline run's planned LLM calls into calls and tokens for ``scenario.llm``."""
    pack = load_pack(scenario.llm.pack)
    calls: dict[str, float] = dict(offline.planned_llm_calls)
    if not calls:
        for operation, count in offline.operations.items():
            for llm_operation, factor in LLM_CALLS_PER_OPERATION.get(operation, {}).items():
                calls[llm_operation] = calls.get(llm_operation, 0) + factor * count
    for operation in ("gradient", "optimize"):  # the backward phase calls one per operation
        if operation in offline.operations and operation not in calls:
            calls[operation] = offline.operations[operation]
    rows = []
    for operation, count in sorted(calls.items()):
        if operation not in pack.operations or not count:
            continue
        parts = offline.planned_llm_parts.get(operation)
        batch = round(parts / count) if parts else scenario.llm.batch_size
        rows.append(
            OperationEstimate(
                operation=operation,
                calls=int(count),
                prompt_tokens=prompt_tokens(pack, operation, scenario, batch),
                output_tokens=output_tokens(operation, scenario, batch),
            )
        )
    every = prequential_every(scenario.evaluation.prequential, "llm")
    if every > 0 and "rank" in pack.operations:  # test-then-train ranks on the LLM cadence
        rows.append(
            OperationEstimate(
                operation="rank (prequential)",
                calls=-(-offline.n_train // every),
                prompt_tokens=prompt_tokens(pack, "rank", scenario, None),
                output_tokens=output_tokens("rank", scenario, None),
            )
        )
    return Estimate(
        operations=rows,
        model=scenario.llm.model,
        train_interactions=offline.n_train,
        steps=offline.n_steps,
        max_output_tokens=scenario.llm.max_tokens,
        price=scenario.llm.budget.prices.get(scenario.llm.model),
    )


def _words(scenario: Scenario) -> int:
    return 2 * scenario.world.profile_size  # the LLM brain's words per profile text


def output_tokens(operation: str, scenario: Scenario, batch: int | None = None) -> int:
    """Expected answer tokens of one ``operation`` call (at most ``llm.max_tokens``)."""
    formula = OUTPUT_TOKENS.get(operation, "150")
    words = min(_words(scenario), 120) * TOKENS_PER_WORD / 2  # answers use about half the budget
    batch = scenario.llm.batch_size if batch is None else max(1, batch)
    values = {
        "words": words,
        "batch": batch,
        "n": scenario.evaluation.n_negatives + 1,
    }
    expected = int(eval(formula, {"__builtins__": {}}, values))
    parts = batch if operation.endswith("_batch") else 1
    parts = 3 if operation == "reflect_fused" else parts
    return min(expected, scenario.llm.max_tokens * parts)


def sample_variables(
    pack: PromptPack, operation: str, scenario: Scenario, batch: int | None = None
) -> dict[str, object]:
    """Placeholder variables of typical (bounded) length for one ``operation`` prompt (a batched
    one with ``batch`` agents, else ``llm.batch_size``)."""
    llm = scenario.llm
    profile = "x" * llm.max_profile_chars
    n_candidates = scenario.evaluation.n_negatives + 1
    batch = llm.batch_size if batch is None else max(1, batch)
    rules = "\n".join(
        f"{n}. [{rule.rule_id}] {rule.text}"
        for n, rule in enumerate(default_rules(scenario.world.filters), 1)
    )
    messages = "\n".join(
        f"[{i}] router r:{i} (similarity 0.50, sent this step): " + "x" * llm.max_message_chars
        for i in range(min(scenario.world.buffer.capacity, 4))
    )
    client_block = (
        f"### i:1 (item)\nOriginal profile: {profile}\nPropagated profile so far: {profile}\n"
        f"Filter rules, in order:\n{rules}\nMessages:\n{messages}"
    )
    router_block = f"### r:1\nCurrent profile (empty if new): {profile}\nAttributes: " + "x" * 200
    trends = scenario.propagation.trend_share > 0
    remembered = scenario.interaction.short_term_items  # the user's recent items, named
    variables: dict[str, object] = {}
    for name in pack.spec(operation).variables:
        if name == "max_words":
            variables[name] = _words(scenario)
        elif name == "n_candidates":
            variables[name] = n_candidates
        elif name == "candidates":
            count = 2 if operation in ("predict", "choose_merge") else n_candidates
            variables[name] = "\n".join(f"i:{i}: {profile}" for i in range(count))
        elif name == "filter_rules":
            variables[name] = rules
        elif name == "messages":
            variables[name] = messages
        elif name == "clients":
            variables[name] = "\n\n".join([client_block] * batch)
        elif name == "routers":
            variables[name] = "\n\n".join([router_block] * batch)
        elif name == "profiles":
            variables[name] = "\n\n".join([f"### u:1 (user)\n{profile}"] * batch)
        elif name in ("agents", "categories"):
            variables[name] = ["u:1", "i:2", "i:3"]
        elif name == "user_profile" and operation == "rank" and remembered:
            variables[name] = with_recent_text(profile, [SAMPLE_ITEM_LABEL] * remembered)
        elif name == "propagated_profile" and operation == "rank" and trends:
            variables[name] = with_trend_text(profile, SAMPLE_TREND)  # router trends named
        elif name.endswith("_id") or name in ("kind", "role", "outcome"):
            variables[name] = "u:1"
        else:
            variables[name] = profile
    return variables


def prompt_tokens(
    pack: PromptPack, operation: str, scenario: Scenario, batch: int | None = None
) -> int:
    """Tokens of one rendered prompt with placeholder variables, plus the output schema."""
    spec = pack.spec(operation)
    messages = pack.render(operation, sample_variables(pack, operation, scenario, batch))
    schema = json.dumps(spec.output_model.model_json_schema())
    chars = sum(len(m["content"]) for m in messages) + len(schema)
    return chars // CHARS_PER_TOKEN


def estimate_table(result: Estimate, title: str | None = None) -> Table:
    """Calls, tokens and cost per operation, with per-step and per-interaction columns."""
    table = Table(title=title or f"Dry run: estimated LLM use with {result.model}")
    columns = (
        "operation",
        "calls",
        "calls/step",
        "calls/interaction",
        "prompt tok/call",
        "output tok/call",
        "tokens/interaction",
        "cost",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "operation" else "right")
    n_train = max(result.train_interactions, 1)
    steps = max(result.steps, 1)
    for row in result.operations:
        tokens = row.calls * (row.prompt_tokens + row.output_tokens)
        cost = result.cost_of(row.calls * row.prompt_tokens, row.calls * row.output_tokens)
        table.add_row(
            row.operation,
            f"{row.calls:,}",
            f"{row.calls / steps:,.2f}",
            f"{row.calls / n_train:.3f}",
            f"{row.prompt_tokens:,}",
            f"{row.output_tokens:,}",
            f"{tokens / n_train:,.0f}",
            "-" if cost is None else f"${cost:,.2f}",
        )
    table.add_section()
    cost = result.cost
    table.add_row(
        "total",
        f"{result.calls:,}",
        f"{result.calls / steps:,.2f}",
        f"{result.calls / n_train:.2f}",
        f"{result.prompt_tokens // max(result.calls, 1):,}",
        f"{result.output_tokens // max(result.calls, 1):,}",
        f"{result.tokens / n_train:,.0f}",
        "-" if cost is None else f"${cost:,.2f}",
    )
    table.caption = (
        f"{result.train_interactions:,} training interactions in {result.steps:,} steps: "
        f"{result.calls / n_train:.2f} calls and {result.tokens / n_train:,.0f} tokens per "
        f"training interaction, {result.tokens:,} tokens in all; "
        + (
            f"estimated cost ${cost:,.2f}"
            if cost is not None
            else "no price for this model in llm.budget.prices"
        )
    )
    return table


def measured(
    counts: OperationCounts,
    *,
    model: str,
    train_interactions: int,
    steps: int,
    max_output_tokens: int,
    price: tuple[float, float] | None,
) -> Estimate:
    """The same figures as an estimate, from what a run really sent: ``counts`` holds calls and
    prompt/output tokens per operation (the LLM brain's, or summed from a trace)."""
    rows = [
        OperationEstimate(
            operation=operation,
            calls=calls,
            prompt_tokens=round(counts.prompt_tokens.get(operation, 0) / calls),
            output_tokens=round(counts.output_tokens.get(operation, 0) / calls),
        )
        for operation, calls in sorted(counts.counts.items())
        if calls
    ]
    return Estimate(
        operations=rows,
        model=model,
        train_interactions=train_interactions,
        steps=steps,
        max_output_tokens=max_output_tokens,
        price=price,
    )

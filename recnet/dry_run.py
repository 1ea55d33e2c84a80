"""Cost preview: how many LLM calls and tokens a scenario would take, before anything is spent.

Pipeline position: behind ``recnet simulate --dry-run``. The offline brain runs the scenario (no
network) and counts every agent operation; each count becomes LLM calls under the LLM brain's call
policy (``LLM_CALLS_PER_OPERATION``), and each call is priced in tokens by rendering the prompt
pack's template with placeholder text of typical length plus the output schema. The estimate is a
planning figure: real prompts vary with profile lengths and real answers with the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from rich.table import Table

from recnet.config.scenario import Scenario
from recnet.eval.prequential import prequential_every
from recnet.llm.pack import load_pack
from recnet.runner import RunResult

CHARS_PER_TOKEN = 4
TYPICAL_OUTPUT_TOKENS = 150
SAMPLE_CHARS_PER_VARIABLE = 400  # one profile or message text
SAMPLE_CHARS_PER_CANDIDATE = 160

#: LLM calls the LLM brain (``recnet.brain.llm``) makes per offline operation: a reflected profile
#: text is re-extracted into attributes for routing (at most one extract per reflect); routers
#: and propagated profiles combine weights numerically, so summarize and merge need no extract.
#: Item profiles at initialisation come from metadata without a call. Repairs of malformed
#: answers add up to ``llm.max_repairs`` calls each and are not in the estimate.
LLM_CALLS_PER_OPERATION: Mapping[str, Mapping[str, float]] = {
    "predict": {"predict": 1},
    "reflect_user": {"reflect_user": 1, "extract": 1},
    "reflect_item": {"reflect_item": 1, "extract": 1},
    "summarize": {"summarize": 1},
    "merge": {"merge": 1},
    "rank": {"rank": 1},
    "gradient": {"gradient": 1},  # backward phase (when enabled)
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
    max_output_tokens: int
    price: tuple[float, float] | None  # USD per 1M input / output tokens

    @property
    def calls(self) -> int:
        return sum(o.calls for o in self.operations)

    @property
    def tokens(self) -> int:
        return sum(o.calls * (o.prompt_tokens + o.output_tokens) for o in self.operations)

    @property
    def cost(self) -> float | None:
        if self.price is None:
            return None
        prompt = sum(o.calls * o.prompt_tokens for o in self.operations)
        output = sum(o.calls * o.output_tokens for o in self.operations)
        return (prompt * self.price[0] + output * self.price[1]) / 1e6


def estimate(scenario: Scenario, offline: RunResult) -> Estimate:
    """Turn an offline run's operation counts into LLM calls and tokens for ``scenario.llm``."""
    pack = load_pack(scenario.llm.pack)
    calls: dict[str, float] = {}
    for operation, count in offline.operations.items():
        for llm_operation, factor in LLM_CALLS_PER_OPERATION.get(operation, {}).items():
            calls[llm_operation] = calls.get(llm_operation, 0) + factor * count
    n_candidates = scenario.evaluation.n_negatives + 1
    rows = [
        OperationEstimate(
            operation=operation,
            calls=int(count),
            prompt_tokens=prompt_tokens(pack, operation, n_candidates),
            output_tokens=min(TYPICAL_OUTPUT_TOKENS, scenario.llm.max_tokens),
        )
        for operation, count in sorted(calls.items())
        if operation in pack.operations
    ]
    every = prequential_every(scenario.evaluation.prequential, "llm")
    if every > 0 and "rank" in pack.operations:  # test-then-train ranks on the LLM cadence
        rows.append(
            OperationEstimate(
                operation="rank (prequential)",
                calls=-(-offline.n_train // every),
                prompt_tokens=prompt_tokens(
                    pack, "rank", scenario.evaluation.prequential.n_negatives + 1
                ),
                output_tokens=min(TYPICAL_OUTPUT_TOKENS, scenario.llm.max_tokens),
            )
        )
    return Estimate(
        operations=rows,
        model=scenario.llm.model,
        train_interactions=offline.n_train,
        max_output_tokens=scenario.llm.max_tokens,
        price=scenario.llm.budget.prices.get(scenario.llm.model),
    )


def prompt_tokens(pack: object, operation: str, n_candidates: int) -> int:
    """Tokens of one rendered prompt with placeholder variables, plus the output schema."""
    spec = pack.spec(operation)  # type: ignore[attr-defined]
    variables: dict[str, object] = {}
    for name in spec.variables:
        if name.startswith("n_") or name == "max_words":
            variables[name] = n_candidates if name.startswith("n_") else 80
        elif "candidate" in name:
            variables[name] = "x" * (SAMPLE_CHARS_PER_CANDIDATE * n_candidates)
        else:
            variables[name] = "x" * SAMPLE_CHARS_PER_VARIABLE
    messages = pack.render(operation, variables)  # type: ignore[attr-defined]
    schema = json.dumps(spec.output_model.model_json_schema())
    chars = sum(len(m["content"]) for m in messages) + len(schema)
    return chars // CHARS_PER_TOKEN


def estimate_table(result: Estimate) -> Table:
    table = Table(title=f"Dry run: estimated LLM use with {result.model}")
    for column in ("operation", "calls", "prompt tokens/call", "output tokens/call", "tokens"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    for row in result.operations:
        table.add_row(
            row.operation,
            f"{row.calls:,}",
            f"{row.prompt_tokens:,}",
            f"{row.output_tokens:,}",
            f"{row.calls * (row.prompt_tokens + row.output_tokens):,}",
        )
    per = result.calls / max(result.train_interactions, 1)
    table.add_section()
    table.add_row("total", f"{result.calls:,}", "", "", f"{result.tokens:,}")
    cost = result.cost
    table.caption = (
        f"{per:.2f} calls and {result.tokens / max(result.train_interactions, 1):,.0f} tokens per "
        f"training interaction; outputs assumed {TYPICAL_OUTPUT_TOKENS} tokens "
        f"(at most {result.max_output_tokens}); "
        + (
            f"estimated cost ${cost:,.2f}"
            if cost is not None
            else "no price for this model in llm.budget.prices"
        )
    )
    return table

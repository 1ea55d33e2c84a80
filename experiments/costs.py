"""Estimated LLM calls and tokens of a run, so cost columns exist without an API key.

Pipeline position: used by ``experiments.harness`` after an offline run. The offline brain counts
its operations (``RunResult.operations``). Two estimates turn them into LLM cost:

**Primary: the library's dry run** (``recnet.dry_run.estimate``, what ``recnet simulate
--dry-run`` prints), when importable. It maps each offline operation to the calls the LLM brain
makes for it (e.g. a reflection is a reflect call plus an extract call; item profiles at start
need no call) and prices a call by rendering the prompt pack's template with placeholder
variables of typical length plus the output schema, at 4 characters per token, and 150 output
tokens per call. Operations the dry run does not map yet (the backward phase's ``gradient`` and
``optimize``) are added here one call each, priced the same way with ``recnet.dry_run``'s own
functions, and named in the record's ``cost_note``.

**Secondary: measured text sizes** (this module, ``tokens_measured_per_inter`` in the CSVs),
one call per offline operation:

* **prompt tokens** — the operation's template of the default prompt pack (``agents/default``),
  rendered with ``recnet.llm.pack`` using representative variables whose lengths are the run's
  measured mean texts (user, item, propagated and router profiles from the trace; the actual
  default filter rules; the mean number of router messages per merge; the run's candidate-list
  length), plus the output JSON schema the LLM brain sends with every request. Tokens are counted
  with ``recnet.llm.protocol.estimate_prompt_tokens`` (about 4 characters per token plus 4 per
  message) — the same estimate the budget and rate-limit wrappers use before a call.
* **completion tokens** — the length / 4 of a representative answer of the operation's output
  model (e.g. a reflected profile of the measured mean profile length plus a one-sentence reason).

The offline brain renders profiles from weighted attributes (12-16 attributes, ~100-400
characters); an LLM's free-text profiles are usually longer, so these figures are a lower bound
for the same number of calls. Operations the pack does not know are not priced (reported as
``unpriced``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from recnet.config.scenario import Scenario
from recnet.llm.pack import PromptPack, load_pack
from recnet.llm.protocol import estimate_prompt_tokens, estimate_tokens
from recnet.runner import RunResult

NO_CALL_OPERATIONS = frozenset({"extract"})  # item profiles at start come from metadata
PROFILE_WORDS = 120  # the length budget the prompts state for profiles
REASON = "The chosen item shows a clear taste for these genres and moods, so the profile says so."
FILLER = "dark crime drama, witty dialogue, 1990s, slow-burn mystery, strong female lead; "


@dataclass(frozen=True)
class TextSizes:
    """Mean sizes (characters) of the texts an LLM brain would put into prompts in one run."""

    user_profile: float = 250.0
    item_profile: float = 250.0
    item_init: float = 120.0
    propagated: float = 250.0
    router: float = 400.0
    filter_rules: tuple[str, ...] = ()
    messages_per_merge: float = 1.0
    n_candidates: int = 20


def text_of(n_chars: float) -> str:
    """Representative text of about ``n_chars`` characters."""
    n = max(round(n_chars), 1)
    return (FILLER * (n // len(FILLER) + 1))[:n]


def _candidates(n: int, sizes: TextSizes) -> str:
    return "\n".join(f"i:{1000 + k}: {text_of(sizes.item_profile)}" for k in range(n))


def _rules(sizes: TextSizes) -> str:
    rules = sizes.filter_rules or ("Reject community updates unrelated to my own profile.",)
    return "\n".join(f"{k + 1}. [rule-{k}] {text}" for k, text in enumerate(rules))


def prompt_variables(operation: str, sizes: TextSizes) -> dict[str, Any] | None:
    """Representative variables for ``operation`` of the default pack (None = unknown op)."""
    user, item, prop = (
        text_of(sizes.user_profile),
        text_of(sizes.item_profile),
        text_of(sizes.propagated),
    )
    router = text_of(sizes.router)
    n_messages = max(round(sizes.messages_per_merge), 1)
    table: dict[str, dict[str, Any]] = {
        "extract": {
            "kind": "item",
            "profile": text_of(sizes.item_init),
            "categories": ["genre", "era", "mood", "theme"],
        },
        "summarize": {
            "router_profile": router,
            "attributes": [f"genre: {text_of(12)}" for _ in range(8)],
            "max_words": PROFILE_WORDS,
        },
        "reflect_user": {
            "profile": user,
            "consumed_item": f"Item i:1000: {item}",
            "other_item": f"Item i:1001: {item}",
            "outcome": "wrong",
            "max_words": PROFILE_WORDS,
        },
        "reflect_item": {
            "profile": item,
            "user_profile": user,
            "role": "consumed",
            "outcome": "wrong",
            "max_words": PROFILE_WORDS,
        },
        "merge": {
            "kind": "user",
            "original_profile": user,
            "propagated_profile": prop,
            "filter_rules": _rules(sizes),
            "messages": "\n".join(
                f"[{k}] router r:{k} (score 0.50): {router}" for k in range(n_messages)
            ),
            "max_words": PROFILE_WORDS,
        },
        "predict": {
            "user_profile": user,
            "propagated_profile": prop,
            "candidates": _candidates(2, sizes),
        },
        "rank": {
            "user_profile": user,
            "propagated_profile": prop,
            "candidates": _candidates(sizes.n_candidates, sizes),
            "n_candidates": sizes.n_candidates,
        },
        "gradient": {
            "user_profile": user,
            "modules": "\n".join(
                [f"[propagated_profile] {prop}", f"[filter_memory] {_rules(sizes)}"]
                + [f"[r:{k}] {router}" for k in range(2)]
            ),
            "candidates": _candidates(2, sizes),
            "predicted": "i:1001",
            "true_item": f"i:1000: {item}",
        },
        "optimize": {
            "module_kind": "propagated_profile",
            "module_id": "u:1",
            "content": prop,
            "judgement": "negative",
            "reason": REASON,
            "suggestion": REASON,
            "allowed_operations": ["rewrite", "none"],
        },
    }
    return table.get(operation)


def completion_text(operation: str, sizes: TextSizes) -> str | None:
    """A representative JSON answer of ``operation`` (None = unknown op)."""
    answers: dict[str, Any] = {
        "extract": {"attributes": {"genre": [text_of(sizes.item_init / 2)], "mood": ["bleak"]}},
        "summarize": {"profile": text_of(sizes.router)},
        "reflect_user": {"updated_profile": text_of(sizes.user_profile), "reason": REASON},
        "reflect_item": {"updated_profile": text_of(sizes.item_profile), "reason": REASON},
        "merge": {
            "propagated_profile": text_of(sizes.propagated),
            "accepted": [0],
            "rejected": [],
            "reason": REASON,
        },
        "predict": {"chosen": "i:1000", "reasoning": REASON},
        "rank": {
            "ranking": [f"i:{1000 + k}" for k in range(sizes.n_candidates)],
            "reasoning": REASON,
        },
        "gradient": {
            "judgements": [
                {"module": m, "judgement": "negative", "reason": REASON, "suggestion": REASON}
                for m in ("propagated_profile", "filter_memory", "r:0", "r:1")
            ]
        },
        "optimize": {
            "operation": "rewrite",
            "content": text_of(sizes.propagated),
            "reason": REASON,
        },
    }
    answer = answers.get(operation)
    return None if answer is None else json.dumps(answer)


@lru_cache(maxsize=4)
def default_pack(name: str = "default") -> PromptPack:
    return load_pack(name)


def tokens_per_operation(sizes: TextSizes, pack: PromptPack | None = None) -> dict[str, int]:
    """Estimated prompt + completion tokens of one call, per operation the pack knows."""
    pack = pack or default_pack()
    out: dict[str, int] = {}
    for operation in pack.operations:
        variables = prompt_variables(operation, sizes)
        answer = completion_text(operation, sizes)
        if variables is None or answer is None:
            continue
        messages = pack.render(operation, variables)
        schema = json.dumps(pack.output_model(operation).model_json_schema())
        out[operation] = (
            estimate_prompt_tokens(messages) + estimate_tokens(schema) + estimate_tokens(answer)
        )
    return out


def estimate_tokens_total(
    counts: Mapping[str, int], per_operation: Mapping[str, int]
) -> tuple[int, list[str]]:
    """Total estimated tokens of a run's operation counts, and the operations left unpriced."""
    total = sum(n * per_operation[op] for op, n in counts.items() if op in per_operation)
    unpriced = sorted(op for op in counts if op not in per_operation)
    return total, unpriced


@dataclass(frozen=True)
class LLMCost:
    """LLM calls and tokens a run would take with the LLM brain."""

    calls: float
    tokens: float
    method: str  # "recnet.dry_run" | "experiments.costs"
    note: str = ""


def llm_cost(scenario: Scenario, result: RunResult, measured: Mapping[str, int]) -> LLMCost:
    """The dry run's estimate plus unmapped operations; ``measured`` (tokens per operation from
    ``tokens_per_operation``) is the fallback when ``recnet.dry_run`` is missing."""
    try:
        from recnet import dry_run
    except ImportError:
        total, unpriced = estimate_tokens_total(result.operations, measured)
        calls = sum(n for op, n in result.operations.items() if op not in unpriced)
        note = f"unpriced: {', '.join(unpriced)}" if unpriced else ""
        return LLMCost(calls, total, "experiments.costs", note)
    estimate = dry_run.estimate(scenario, result)
    calls, tokens = float(estimate.calls), float(estimate.tokens)
    pack = load_pack(scenario.llm.pack)
    added, unpriced = [], []
    for operation, count in sorted(result.operations.items()):
        if operation in dry_run.LLM_CALLS_PER_OPERATION or operation in NO_CALL_OPERATIONS:
            continue
        if operation not in pack.operations:
            unpriced.append(operation)
            continue
        calls += count
        tokens += count * (
            dry_run.prompt_tokens(pack, operation, scenario)
            + dry_run.output_tokens(operation, scenario)
        )
        added.append(operation)
    notes = []
    if added:
        notes.append(f"added to the dry run, one call each: {', '.join(added)}")
    if unpriced:
        notes.append(f"unpriced: {', '.join(unpriced)}")
    return LLMCost(calls, tokens, "recnet.dry_run", "; ".join(notes))

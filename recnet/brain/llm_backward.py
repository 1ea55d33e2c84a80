"""Prompt parts and answer parsing of the LLM critic's *gradient* and *optimize* operations.

Pipeline position: backward phase steps 2 and 3 with the LLM critic (``recnet.critic.llm``, which
makes the calls through the LLM brain's public ``ask``). It produces the same typed values as the
offline critic — ``ModuleJudgement`` per module and prediction, then ``ProfileRewrite`` /
``FilterRewrite`` / ``RouterDecision`` per module — so the phase's batching, validation, rollback
and lineage are shared.

* *gradient* — one call per selected prediction: the user's profile, the candidates, what was
  predicted and what was chosen, and one block per module (``[propagated_profile]``,
  ``[filter_memory]``, ``[r:3]`` ...). The answer must judge every module exactly once
  (validator); judgements carry no numbers (``effect=None``), so batches are decided by majority.
* *optimize* — one call per module with a non-neutral batch: its content, the batch's verdict,
  reasons and suggestions, and the operations allowed for it (``split`` only when the router may
  split, ``add`` only when the memory has room, ``merge`` only towards the most similar routers
  offered). Answers are checked against the module (known rule ids, a permutation for
  ``reorder``, two or more parts for ``split``) and re-asked when wrong.

Text is the truth, weights follow: a rewritten propagated or router profile keeps the attribute
weights its new text still mentions and dampens the others (no extraction call); a rule text in
the canonical wording (``recnet.world.rules.parse_rule``) stays executable, any other rule is a
text rule applied by the LLM's merge. A τ change moves at most ``backward.tau_step`` within
``propagation.tau ± backward.tau_range``. A call whose answer stays unusable yields None and the
module is left as it is (the failure is in ``llm_calls``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from recnet.brain.credit import NO_ADJUSTMENT, Feedback, ModuleJudgement, ModuleKind
from recnet.brain.llm_text import exactly_once
from recnet.brain.optimizer import (
    FilterRewrite,
    OptimizerSettings,
    ProfileRewrite,
    RouterDecision,
    RouterState,
    RuleEdit,
    new_rule_id,
)
from recnet.llm.schemas import GradientOutput, OptimizeOutput
from recnet.world.agents import ClientAgent, RouterAgent
from recnet.world.buffer import RouterMessage
from recnet.world.profile import Weights, normalized, render
from recnet.world.rules import FilterMemory, parse_rule

PHASE = "backward"
PROFILE_MODULE = "propagated_profile"
FILTER_MODULE = "filter_memory"
_SHOWN_REASONS = 4  # distinct reasons/suggestions of a batch shown to the optimizer


# -- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contributor:
    """A router whose messages shaped a prediction, and whom they reached."""

    router: RouterAgent
    reached: str  # "the user and the rival", ...
    n_members: int


@dataclass(frozen=True, slots=True)
class GradientRequest:
    """One prediction to judge, with every module that took part."""

    feedback: Feedback
    user: ClientAgent
    candidates: Sequence[ClientAgent]  # in the order of ``feedback.candidates``
    contributors: Sequence[Contributor]
    rejected: Sequence[RouterMessage]  # messages the user's filter memory recently turned away
    step: int


@dataclass(frozen=True, slots=True)
class OptimizeRequest:
    """One module to edit, with its batched judgements and what it may do."""

    module: ModuleKind
    target_id: str
    content: str
    judgements: Sequence[ModuleJudgement]
    allowed: tuple[str, ...]
    step: int
    rule_ids: tuple[str, ...] = ()  # filter memory: its rule ids, in order
    partners: tuple[str, ...] = ()  # router: the routers it may merge with


# -- prompt parts ---------------------------------------------------------------------------------


def module_blocks(request: GradientRequest) -> dict[str, str]:
    """Module id → its block in the gradient prompt (ids in square brackets, one block each)."""
    user = request.user
    propagated = user.propagated_profile_text() or "(empty: nothing taken in yet)"
    blocks = {
        PROFILE_MODULE: f"[{PROFILE_MODULE}] What the user took in from its communities: "
        f"{_flat(propagated)}",
    }
    rules = "; ".join(
        f"{n}. ({r.rule_id}) {r.text.rstrip('.')}" for n, r in enumerate(user.filters.rules, 1)
    )
    rejected = "; ".join(
        f"router {m.router_id} (similarity {m.score:.2f}): "
        f"{_flat(m.text or render(m.attributes, limit=8))}"
        for m in request.rejected[:4]
    )
    blocks[FILTER_MODULE] = (
        f"[{FILTER_MODULE}] The user's filter rules, first match decides: {rules or '(none)'}. "
        f"Recently turned away: {rejected or 'nothing'}."
    )
    for c in request.contributors:
        router = c.router
        blocks[router.router_id] = (
            f"[{router.router_id}] A router (similarity threshold {router.tau:.2f}, "
            f"{c.n_members} members) whose messages reached {c.reached}: "
            f"{_flat(router.profile_text())}"
        )
    return blocks


def profile_content(client: ClientAgent) -> str:
    return (
        f"Propagated profile: {_flat(client.propagated_profile_text() or '(empty)')}\n"
        f"Its strongest attributes: {render(client.propagated, limit=12)}"
    )


def filter_content(memory: FilterMemory) -> str:
    lines = [f"{n}. [{r.rule_id}] {r.text}" for n, r in enumerate(memory.rules, 1)]
    lines.append(
        f"({len(memory.rules)} of at most {memory.max_rules} rules. Rules phrased like the ones "
        "above are executed exactly; other rules are read by the agent when it merges.)"
    )
    return "\n".join(lines)


def router_content(
    router: RouterAgent,
    state: RouterState,
    settings: OptimizerSettings,
    partners: Sequence[RouterAgent],
) -> str:
    low, high = settings.tau_bounds
    lines = [
        f"Profile: {_flat(router.profile_text())}",
        f"Strongest attributes: {render(router.profile, limit=12)}",
        f"Similarity threshold (tau): {router.tau:.3f}; allowed range {low:.2f} to {high:.2f}, "
        f"at most {settings.tau_step:.3f} per edit. A higher tau reaches fewer clients.",
        f"Members: {state.n_members}; spread of its community: {state.spread:.2f}",
    ]
    if partners:
        lines.append("Most similar routers (merge candidates):")
        lines.extend(f"- {p.router_id}: {_flat(p.profile_text())}" for p in partners)
    return "\n".join(lines)


def filter_operations(memory: FilterMemory) -> tuple[str, ...]:
    ops = ["modify", "delete", "reorder"] if memory.rules else []
    if len(memory.rules) < memory.max_rules:
        ops.append("add")
    return (*ops, "none")


def router_operations(
    state: RouterState, settings: OptimizerSettings, n_routers: int, partners: Sequence[str]
) -> tuple[str, ...]:
    ops = ["rewrite", "tau"]
    if n_routers < settings.max_routers and state.n_members >= settings.min_members_split:
        ops.append("split")
    if partners and n_routers - 1 >= settings.min_routers:
        ops.append("merge")
    return (*ops, "none")


def client_request(
    agent: ClientAgent, module: ModuleKind, judgements: Sequence[ModuleJudgement], step: int
) -> OptimizeRequest:
    """The optimize request for a user's propagated profile or filter memory."""
    if module == PROFILE_MODULE:
        content, allowed = profile_content(agent), ("rewrite", "none")
        return OptimizeRequest(module, agent.agent_id, content, judgements, allowed, step)
    memory = agent.filters
    return OptimizeRequest(
        module,
        agent.agent_id,
        filter_content(memory),
        judgements,
        filter_operations(memory),
        step,
        rule_ids=tuple(r.rule_id for r in memory.rules),
    )


def router_request(
    router: RouterAgent,
    state: RouterState,
    settings: OptimizerSettings,
    n_routers: int,
    partners: Sequence[RouterAgent],
    judgements: Sequence[ModuleJudgement],
    step: int,
) -> OptimizeRequest:
    """The optimize request for a router, offering ``partners`` for a merge."""
    partner_ids = tuple(p.router_id for p in partners)
    return OptimizeRequest(
        "router",
        router.router_id,
        router_content(router, state, settings, partners),
        judgements,
        router_operations(state, settings, n_routers, partner_ids),
        step,
        partners=partner_ids,
    )


# -- answers → typed values -----------------------------------------------------------------------


def _key(text: str) -> str:
    return text.strip().strip("[]()").strip().lower()


def judgements_from(
    answer: GradientOutput, modules: Sequence[str], user_id: str
) -> list[ModuleJudgement]:
    """The answer's judgements as ``ModuleJudgement`` values, in the modules' shown order."""
    by_key = {_key(j.module): j for j in answer.judgements}
    out = []
    for module_id in modules:
        j = by_key[_key(module_id)]
        if module_id in (PROFILE_MODULE, FILTER_MODULE):
            kind: ModuleKind = module_id  # type: ignore[assignment]
            target = user_id
        else:
            kind, target = "router", module_id
        suggestion = j.suggestion.strip() or NO_ADJUSTMENT
        out.append(
            ModuleJudgement(
                kind, target, j.judgement, j.reason.strip(), suggestion, client_id=user_id
            )
        )
    return out


def weights_following_text(
    weights: Mapping[str, float], text: str, factor: float
) -> tuple[Weights, list[str]]:
    """``weights`` with every liked attribute the ``text`` no longer mentions scaled by ``factor``.

    An attribute ``category:value`` counts as mentioned when its value appears in the text (case
    and spacing ignored). Returns the new weights and the attributes dampened.
    """
    lowered = " ".join(text.lower().split())
    out, dampened = dict(weights), []
    for attribute, weight in weights.items():
        if weight <= 0:
            continue
        value = " ".join((attribute.partition(":")[2] or attribute).lower().split())
        if value and value not in lowered:
            out[attribute] = weight * factor
            dampened.append(attribute)
    return out, dampened


def profile_rewrite_from(
    answer: OptimizeOutput, client: ClientAgent, settings: OptimizerSettings
) -> ProfileRewrite | None:
    if answer.operation != "rewrite" or not answer.content:
        return None
    text = answer.content.strip()
    weights, dampened = weights_following_text(client.propagated, text, settings.dampen)
    return ProfileRewrite(client.agent_id, weights, text, tuple(dampened))


def filter_rewrite_from(
    answer: OptimizeOutput, memory: FilterMemory, client_id: str
) -> FilterRewrite | None:
    op, reason = answer.operation, answer.reason.strip() or f"LLM optimize: {answer.operation}"
    if op in ("modify", "add"):
        text = (answer.content or "").strip()
        kind, params = parse_rule(text)
        if op == "modify":
            edit = RuleEdit("modify", _rule(answer.target, memory), kind, params, text)
        else:
            edit = RuleEdit("add", new_rule_id(memory, kind), kind, params, text)
        return FilterRewrite(client_id, (edit,), reason)
    if op == "delete":
        return FilterRewrite(client_id, (RuleEdit("delete", _rule(answer.target, memory)),), reason)
    if op == "reorder":
        order = [_rule(r, memory) for r in answer.order or ()]
        if order == [r.rule_id for r in memory.rules]:
            return None
        edits = tuple(RuleEdit("reorder", r, position=k) for k, r in enumerate(order))
        return FilterRewrite(client_id, edits, reason)
    return None


def router_decision_from(
    answer: OptimizeOutput,
    state: RouterState,
    settings: OptimizerSettings,
    partners: Sequence[str] = (),
) -> RouterDecision | None:
    op, rid = answer.operation, state.router_id
    reason = answer.reason.strip() or f"LLM optimize: {op}"
    tau = None if answer.tau is None else _bounded_tau(answer.tau, state.tau, settings)
    if op == "rewrite" and answer.content:
        text = answer.content.strip()
        weights, dampened = weights_following_text(state.profile, text, settings.dampen)
        moved = tau is not None and abs(tau - state.tau) > 1e-9
        return RouterDecision(
            "rewrite_tau" if moved else "rewrite",
            rid,
            reason,
            normalized(weights),
            tau if moved else None,
            dampened=tuple(dampened),
            text=text,
        )
    if op == "tau" and tau is not None and abs(tau - state.tau) > 1e-9:
        return RouterDecision("tau", rid, reason, tau=tau)
    if op == "split":
        parts = tuple(p.strip() for p in answer.parts or () if p.strip())
        return RouterDecision("split", rid, reason, parts=parts)
    named = {_key(p): p for p in partners}.get(_key(answer.target or ""))
    if op == "merge" and named is not None:
        return RouterDecision("merge", rid, reason, partner=named)
    return None


def _bounded_tau(proposed: float, current: float, settings: OptimizerSettings) -> float:
    """Move from ``current`` towards ``proposed`` by at most one step, never out past a bound
    (a τ already outside the bounds may still move back towards them)."""
    low, high = settings.tau_bounds
    step = settings.tau_step
    if proposed > current:
        return min(proposed, current + step, max(high, current))
    return max(proposed, current - step, min(low, current))


def _rule(answer: str | None, memory: FilterMemory) -> str:
    ids = {r.rule_id.lower(): r.rule_id for r in memory.rules}
    return ids[_key(answer or "")]


def assign_texts(profiles: Sequence[Mapping[str, float]], texts: Sequence[str]) -> list[str | None]:
    """Give each new router the unused text that mentions most of its attributes (greedy)."""
    free = [t for t in texts if t]
    out: list[str | None] = []
    for profile in profiles:
        if not free:
            out.append(None)
            continue

        def mentions(text: str, profile: Mapping[str, float] = profile) -> int:
            lowered = text.lower()
            return sum(1 for a in profile if (a.partition(":")[2] or a).lower() in lowered)

        best = max(range(len(free)), key=lambda k: (mentions(free[k]), -k))
        out.append(free.pop(best))
    return out


# -- validators (their messages go back to the model in a re-ask) ---------------------------------


def _judges_each(modules: Sequence[str]) -> Callable[[GradientOutput], None]:
    expected = {_key(m): m for m in modules}

    def check(value: GradientOutput) -> None:
        answers = [j.module for j in value.judgements]
        problems = exactly_once(answers, modules, lambda answer: expected.get(_key(answer)))
        if problems:
            raise ValueError(
                "'judgements' must judge every module exactly once, by its id "
                f"({'; '.join(problems)}); the modules are: {', '.join(modules)}"
            )

    return check


def _fits(request: OptimizeRequest) -> Callable[[OptimizeOutput], None]:
    rules = {r.lower() for r in request.rule_ids}
    partners = {p.lower() for p in request.partners}

    def check(value: OptimizeOutput) -> None:
        op = value.operation
        if op not in request.allowed:
            raise ValueError(
                f"operation {op!r} is not allowed here; choose one of: {', '.join(request.allowed)}"
            )
        if op in ("rewrite", "modify", "add") and not (value.content or "").strip():
            raise ValueError(f"operation {op!r} needs the new text in 'content'")
        if op in ("modify", "delete") and _key(value.target or "") not in rules:
            raise ValueError(
                f"'target' must be one of the rule ids {', '.join(request.rule_ids)} "
                f"(got {value.target!r})"
            )
        if op == "reorder":
            order = [_key(r) for r in value.order or ()]
            if sorted(order) != sorted(rules) or len(set(order)) != len(order):
                raise ValueError(
                    f"'order' must list every rule id exactly once: {', '.join(request.rule_ids)}"
                )
        if op == "tau" and value.tau is None:
            raise ValueError("operation 'tau' needs the new threshold in 'tau'")
        if op == "split" and len([p for p in value.parts or () if p.strip()]) < 2:
            raise ValueError("operation 'split' needs two or more router profiles in 'parts'")
        if op == "merge" and _key(value.target or "") not in partners:
            raise ValueError(
                f"'target' must be one of the routers offered for a merge: "
                f"{', '.join(request.partners)} (got {value.target!r})"
            )

    return check


def _distinct(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))[:_SHOWN_REASONS]


def _flat(text: str) -> str:
    return " ".join(text.split())

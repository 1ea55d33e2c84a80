"""The *optimize* operation of the backward phase (offline brain), batched per module.

Pipeline position: backward phase, step 3, after credit assignment (``recnet.brain.credit``). All
judgements of one module (a user's propagated profile, a user's filter memory, a router) are
aggregated first, then one decision is made for that module:

* propagated profile — when its net effect is negative, dampen the attributes that hurt most;
* filter memory — loosen the rules that rejected helpful messages (lower a minimum relevance,
  relax a conflict threshold, widen a recency window; delete a rule loosened to nothing); when
  accepted messages hurt, tighten (raise the minimum relevance above the harmful messages'
  scores, lower the maximum share; add a minimum-relevance rule if the memory lost it); when the
  propagated profile keeps helping, allow it a larger share. Edits are ``RuleEdit`` values that
  ``apply_rule_edits`` turns into a new memory owned by the client (copy on write);
* router — negative: split when its community is spread out (and K < max), else rewrite (dampen
  harmful attributes) and raise τ; positive: lower τ a little. Near-duplicate routers are merged
  while K > min.

Inputs and outputs are plain dataclasses, so an LLM implementation (the ``optimize`` template)
can produce the same decisions from the judgements' text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from recnet.brain.credit import Judgement, ModuleJudgement, ModuleKind
from recnet.config.scenario import Scenario
from recnet.world.profile import Weights, normalized, top
from recnet.world.rules import FilterMemory, FilterRule, RuleKindName, describe

ModuleKey = tuple[ModuleKind, str]


@dataclass(frozen=True, slots=True)
class OptimizerSettings:
    """Step sizes and bounds of the offline optimizer (from ``backward`` and ``world``)."""

    tolerance: float = 0.01
    dampen: float = 0.5  # factor applied to harmful attributes
    max_dampened: int = 6  # attributes dampened per optimisation
    relevance_step: float = 0.1  # most a min-relevance threshold rises in one optimisation
    share_factor: float = 0.8  # max-share multiplier when tightening (1 / it when loosening)
    share_bounds: tuple[float, float] = (0.1, 0.9)
    tau_step: float = 0.02
    tau_bounds: tuple[float, float] = (-1.0, 1.0)
    split_spread: float = 0.6  # split a negative router when 1 − mean cos(member, router) ≥ this
    merge_similarity: float = 0.95  # merge routers whose profile embeddings are at least this close
    min_members_split: int = 8
    max_router_ops: int = 3  # router rewrites/τ changes/splits per round (merges come on top)
    min_routers: int = 2
    max_routers: int = 60
    max_rules: int = 8
    router_profile_size: int = 32

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> OptimizerSettings:
        b, w = scenario.backward, scenario.world
        tau = scenario.propagation.tau
        return cls(
            tolerance=b.tolerance,
            tau_step=b.tau_step,
            tau_bounds=(max(-1.0, tau - b.tau_range), min(1.0, tau + b.tau_range)),
            split_spread=b.split_spread,
            merge_similarity=b.merge_similarity,
            max_router_ops=b.max_router_ops,
            min_routers=w.min_routers,
            max_routers=w.max_routers,
            max_rules=w.filters.max_rules,
            router_profile_size=w.router_profile_size,
        )


def aggregate(judgements: Iterable[ModuleJudgement]) -> dict[ModuleKey, list[ModuleJudgement]]:
    """Group judgements per module (the batching before one optimisation per module)."""
    groups: dict[ModuleKey, list[ModuleJudgement]] = {}
    for j in judgements:
        groups.setdefault((j.module, j.target_id), []).append(j)
    return groups


def net(judgements: Sequence[ModuleJudgement], tolerance: float) -> tuple[Judgement, float]:
    """The batch's verdict: summed effect (offline) or the majority judgement (LLM, no effect)."""
    if not judgements:
        return "neutral", 0.0
    effects = [j.effect for j in judgements if j.effect is not None]
    if effects:
        total = float(sum(effects))
        if total < -tolerance:
            return "negative", total
        if total > tolerance:
            return "positive", total
        return "neutral", total
    votes = {"positive": 0, "neutral": 0, "negative": 0}
    for j in judgements:
        votes[j.judgement] += 1
    verdict: Judgement = max(("negative", "positive", "neutral"), key=lambda k: votes[k])
    return verdict, 0.0


def summed_harm(judgements: Iterable[ModuleJudgement]) -> Weights:
    harm: Weights = {}
    for j in judgements:
        for a, h in j.attributes.items():
            harm[a] = harm.get(a, 0.0) + h
    return harm


def _dampened(
    profile: Mapping[str, float], harm: Mapping[str, float], s: OptimizerSettings
) -> tuple[Weights, list[str]]:
    ranked = sorted(
        (a for a, h in harm.items() if h > 0 and profile.get(a, 0.0) > 0),
        key=lambda a: (-harm[a], a),
    )[: s.max_dampened]
    out = dict(profile)
    for a in ranked:
        out[a] *= s.dampen
    return out, ranked


# -- propagated profile ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileRewrite:
    """A new propagated profile for one client."""

    client_id: str
    weights: Weights
    text: str | None = None
    dampened: tuple[str, ...] = ()


def optimize_profile(
    client_id: str,
    propagated: Mapping[str, float],
    judgements: Sequence[ModuleJudgement],
    settings: OptimizerSettings,
) -> ProfileRewrite | None:
    """Dampen the attributes that hurt when the propagated profile's net effect is negative."""
    verdict, _ = net(judgements, settings.tolerance)
    if verdict != "negative" or not propagated:
        return None
    weights, dampened = _dampened(propagated, summed_harm(judgements), settings)
    if not dampened:
        return None
    return ProfileRewrite(client_id, weights, None, tuple(dampened))


# -- filter memory --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleEdit:
    """One change to a filter memory.

    ``modify`` sets ``params`` (and/or ``text``) of ``rule_id`` — with a ``kind`` other than the
    rule's, the rule becomes that kind with exactly ``params``; ``add`` inserts a rule of
    ``kind`` at ``position`` (end when None); ``delete`` removes ``rule_id``; ``reorder`` moves
    ``rule_id`` to ``position``.
    """

    op: Literal["modify", "add", "delete", "reorder"]
    rule_id: str
    kind: RuleKindName | None = None
    params: Mapping[str, float] = field(default_factory=dict)
    text: str | None = None
    position: int | None = None


@dataclass(frozen=True, slots=True)
class FilterRewrite:
    """The edits for one client's filter memory and why."""

    client_id: str
    edits: tuple[RuleEdit, ...]
    reason: str


def apply_rule_edits(memory: FilterMemory, edits: Sequence[RuleEdit], owner: str) -> FilterMemory:
    """A new memory owned by ``owner`` with ``edits`` applied in order (the old one is untouched).

    Raises ValueError for an unknown rule id, an added id that exists, a missing kind, or more
    rules than the memory's ``max_rules``.
    """
    rules = list(memory.rules)

    def find(rule_id: str) -> int:
        for k, rule in enumerate(rules):
            if rule.rule_id == rule_id:
                return k
        raise ValueError(f"filter memory of {owner} has no rule {rule_id!r}")

    for edit in edits:
        if edit.op == "modify":
            k = find(edit.rule_id)
            old = rules[k]
            kind = edit.kind or old.kind
            params = {**old.params, **edit.params} if kind == old.kind else dict(edit.params)
            text = edit.text or (describe(kind, params) if kind != "text" else old.text)
            rules[k] = replace(old, kind=kind, params=params, text=text, version=old.version + 1)
        elif edit.op == "add":
            if any(r.rule_id == edit.rule_id for r in rules):
                raise ValueError(f"filter memory of {owner} already has rule {edit.rule_id!r}")
            if edit.kind is None:
                raise ValueError(f"adding rule {edit.rule_id!r} needs a kind")
            if len(rules) >= memory.max_rules:
                raise ValueError(f"filter memory of {owner} is full ({memory.max_rules} rules)")
            text = edit.text or describe(edit.kind, edit.params)
            rule = FilterRule(edit.rule_id, text, edit.kind, dict(edit.params))
            rules.insert(len(rules) if edit.position is None else edit.position, rule)
        elif edit.op == "delete":
            del rules[find(edit.rule_id)]
        elif edit.op == "reorder":
            rule = rules.pop(find(edit.rule_id))
            rules.insert(len(rules) if edit.position is None else edit.position, rule)
        else:  # pragma: no cover - Literal guards it
            raise ValueError(f"unknown rule edit {edit.op!r}")
    return memory.replaced(tuple(rules), owner)


def new_rule_id(memory: FilterMemory, kind: RuleKindName) -> str:
    taken = {r.rule_id for r in memory.rules}
    base = f"rule-{kind}"
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def optimize_filters(
    client_id: str,
    memory: FilterMemory,
    judgements: Sequence[ModuleJudgement],
    settings: OptimizerSettings,
) -> FilterRewrite | None:
    """Rule edits from the batched judgements of a client's filter memory and propagated profile."""
    filters = [j for j in judgements if j.module == "filter_memory"]
    profile = [j for j in judgements if j.module == "propagated_profile"]
    filter_verdict, _ = net(filters, settings.tolerance)
    profile_verdict, _ = net(profile, settings.tolerance)
    edits: list[RuleEdit] = []
    low, high = settings.share_bounds
    if filter_verdict == "negative":
        rule_ids = dict.fromkeys(
            r for j in filters if j.judgement == "negative" for r in j.rule_ids
        )
        scores = [s for j in filters if j.judgement == "negative" for s in j.message_scores]
        for rule_id in rule_ids:
            rule = next((r for r in memory.rules if r.rule_id == rule_id), None)
            if rule is None:
                continue
            edit = _loosen(rule, scores)
            if edit is not None:
                edits.append(edit)
        reason = "rejected messages would have helped: loosen " + (", ".join(rule_ids) or "rules")
    elif profile_verdict == "negative":
        scores = [s for j in profile if j.judgement == "negative" for s in j.message_scores]
        relevance = memory.rule("min_relevance")
        if scores:
            target = min(max(scores) + 0.01, 0.95)
            if relevance is None:
                if len(memory.rules) < memory.max_rules:
                    edits.append(
                        RuleEdit(
                            "add",
                            new_rule_id(memory, "min_relevance"),
                            "min_relevance",
                            {"threshold": round(target, 4)},
                        )
                    )
            else:
                old = relevance.params["threshold"]
                new = min(target, old + settings.relevance_step)
                if new > old + 1e-9:
                    edits.append(
                        RuleEdit("modify", relevance.rule_id, params={"threshold": round(new, 4)})
                    )
        share = memory.rule("max_share")
        if share is not None:
            new_share = max(low, share.params["share"] * settings.share_factor)
            if new_share < share.params["share"] - 1e-9:
                edits.append(
                    RuleEdit("modify", share.rule_id, params={"share": round(new_share, 4)})
                )
        reason = "accepted messages hurt: tighten relevance and share"
    elif profile_verdict == "positive":
        share = memory.rule("max_share")
        if share is not None:
            new_share = min(high, share.params["share"] / settings.share_factor)
            if new_share > share.params["share"] + 1e-9:
                edits.append(
                    RuleEdit("modify", share.rule_id, params={"share": round(new_share, 4)})
                )
        reason = "the propagated profile helps: allow it a larger share"
    else:
        return None
    if not edits:
        return None
    return FilterRewrite(client_id, tuple(edits), reason)


def _loosen(rule: FilterRule, scores: Sequence[float]) -> RuleEdit | None:
    """The edit that lets the helpful messages through ``rule`` (``scores``: their relevance)."""
    if rule.kind == "min_relevance":
        old = rule.params["threshold"]
        new = (min(scores) - 0.01) if scores else old - 0.05
        if new <= -1.0:
            return RuleEdit("delete", rule.rule_id)
        return RuleEdit("modify", rule.rule_id, params={"threshold": round(min(new, old), 4)})
    if rule.kind == "conflict":
        return RuleEdit(
            "modify", rule.rule_id, params={"threshold": round(rule.params["threshold"] + 0.1, 4)}
        )
    if rule.kind == "recency":
        return RuleEdit("modify", rule.rule_id, params={"max_age": rule.params["max_age"] + 1.0})
    return None


# -- routers --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterState:
    """What the optimizer knows about one router."""

    router_id: str
    profile: Weights
    tau: float
    n_members: int
    spread: float


@dataclass(frozen=True, slots=True)
class RouterDecision:
    """``rewrite`` (``profile``), ``tau`` (``tau``), ``rewrite_tau`` (both), ``split`` or
    ``merge`` (with ``partner``). An LLM optimizer also gives the rewritten profile's ``text`` and,
    for a split, the new routers' texts (``parts``)."""

    op: Literal["rewrite", "tau", "rewrite_tau", "split", "merge"]
    router_id: str
    reason: str
    profile: Weights | None = None
    tau: float | None = None
    partner: str | None = None
    dampened: tuple[str, ...] = ()
    text: str | None = None
    parts: tuple[str, ...] = ()


def optimize_router(
    state: RouterState,
    judgements: Sequence[ModuleJudgement],
    settings: OptimizerSettings,
    n_routers: int,
) -> RouterDecision | None:
    """One decision for a router from its batched judgements (None = leave it)."""
    verdict, total = net(judgements, settings.tolerance)
    low, high = settings.tau_bounds
    if verdict == "negative":
        if (
            state.spread >= settings.split_spread
            and n_routers < settings.max_routers
            and state.n_members >= settings.min_members_split
        ):
            return RouterDecision(
                "split",
                state.router_id,
                f"net effect {total:+.3f} and a spread-out community (spread {state.spread:.2f})",
            )
        profile, dampened = _dampened(state.profile, summed_harm(judgements), settings)
        tau = min(high, state.tau + settings.tau_step)
        reason = f"net effect {total:+.3f}: dampen {', '.join(dampened) or 'nothing'}, raise τ"
        if dampened and tau > state.tau + 1e-9:
            return RouterDecision(
                "rewrite_tau",
                state.router_id,
                reason,
                normalized(profile),
                tau,
                dampened=tuple(dampened),
            )
        if dampened:
            return RouterDecision(
                "rewrite", state.router_id, reason, normalized(profile), dampened=tuple(dampened)
            )
        if tau > state.tau + 1e-9:
            return RouterDecision("tau", state.router_id, reason, tau=tau)
        return None
    if verdict == "positive":
        tau = max(low, state.tau - settings.tau_step / 2.0)
        if tau < state.tau - 1e-9:
            return RouterDecision(
                "tau",
                state.router_id,
                f"net effect {total:+.3f}: reach a few more clients",
                tau=tau,
            )
    return None


def routers_to_optimize(
    groups: Mapping[str, Sequence[ModuleJudgement]], settings: OptimizerSettings
) -> list[str]:
    """Routers whose batched credit is not neutral, strongest net effect first, at most
    ``max_router_ops`` (each router operation re-wires memberships, so a round changes few)."""
    scored = []
    for router_id, judgements in groups.items():
        verdict, total = net(judgements, settings.tolerance)
        if verdict != "neutral":
            strength = (
                abs(total) if any(j.effect is not None for j in judgements) else len(judgements)
            )
            scored.append((-strength, router_id))
    scored.sort(key=lambda kv: (kv[0], len(kv[1]), kv[1]))
    return [router_id for _, router_id in scored[: settings.max_router_ops]]


def plan_merges(
    pairs: Sequence[tuple[str, str, float]],
    n_routers: int,
    settings: OptimizerSettings,
    busy: Iterable[str] = (),
) -> list[RouterDecision]:
    """Merge near-duplicate pairs (most similar first) while K stays ≥ ``min_routers``."""
    taken = set(busy)
    out = []
    k = n_routers
    for first, second, similarity in pairs:
        if k - 1 < settings.min_routers:
            break
        if similarity < settings.merge_similarity or first in taken or second in taken:
            continue
        taken.update((first, second))
        out.append(
            RouterDecision(
                "merge", first, f"near-duplicate of {second} (cos {similarity:.3f})", partner=second
            )
        )
        k -= 1
    return out


def router_profile(weights: Mapping[str, float], settings: OptimizerSettings) -> Weights:
    return normalized(
        top({a: w for a, w in weights.items() if w > 0}, settings.router_profile_size)
    )

"""Credit assignment of the backward phase: which module shaped a prediction, and how.

Pipeline position: backward phase, step 2 (*gradient*), between the feedback predictions and the
optimizer (``recnet.brain.optimizer``). Its output, ``ModuleJudgement``, is what an LLM's
``gradient`` template produces too (module, target, positive/neutral/negative, reason,
suggestion); the offline brain fills the numeric fields as well.

Offline credit is counterfactual. For a prediction on user u with true item t, the *rival* r is
the item ranked first when the prediction was wrong and the best other item when it was right;
the margin is ``score(u, t) − score(u, r)`` with the offline brain's score (cosine of effective
profiles, original + w · propagated, plus the popularity prior). A module's *effect* is the
margin minus the margin with that module's contribution removed:

* propagated profile — u's propagated profile set to empty;
* filter memory — u's propagated profile plus what the messages it rejected would have added;
* router R — R's part removed from the propagated profiles of u, t and r.

A router's part of a client's propagated profile comes from the ``ContributionLog``: per client
and router, the decayed share of accepted propagated weight (the offline merge's own arithmetic:
every merge damps old shares by (1 − damping) and adds damping × the message's weight share),
times the router's last message, scaled to the propagated profile's norm. Effects above the
tolerance are positive, below minus the tolerance negative. Attribute *harm* (first-order: how
much each attribute of a contribution lowered the margin) tells the optimizer what to dampen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from recnet.brain.scoring import OfflineScorer as OfflineScorer
from recnet.brain.scoring import ProfileIndex as ProfileIndex
from recnet.brain.scoring import SparseProfile as SparseProfile
from recnet.world.buffer import RouterMessage
from recnet.world.profile import Weights, add_scaled, dot, norm
from recnet.world.rules import Decision

Judgement = Literal["positive", "neutral", "negative"]
ModuleKind = Literal["propagated_profile", "filter_memory", "router"]
NO_ADJUSTMENT = "no adjustment"
_MIN_SHARE = 1e-3
_SHOWN = 4  # attributes named in a reason


@dataclass(frozen=True, slots=True)
class ModuleJudgement:
    """One module's credit for one prediction (the *gradient* operation's unit of output).

    ``attributes`` maps attributes to their harm (> 0: it lowered the true item's margin);
    ``rule_ids`` names the filter rules involved; ``message_scores`` are, for the filter memory
    and the propagated profile, what a min-relevance threshold compares (content relevance, or
    routing scores with ``world.filters.relevance: routing_score``), for a router the routing
    score of its accepted message. An LLM brain may leave the
    numeric fields empty and say everything in ``reason`` and ``suggestion``.
    """

    module: ModuleKind
    target_id: str
    judgement: Judgement
    reason: str
    suggestion: str
    effect: float | None = None
    attributes: Mapping[str, float] = field(default_factory=dict)
    rule_ids: tuple[str, ...] = ()
    message_scores: tuple[float, ...] = ()
    client_id: str | None = None  # the user whose prediction it judged


@dataclass(frozen=True, slots=True)
class Feedback:
    """One feedback prediction: the user ranked the true item among sampled negatives."""

    step: int
    seq: int
    user_id: str
    true_item: str
    candidates: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def order(self) -> list[int]:
        return sorted(range(len(self.scores)), key=lambda k: (-self.scores[k], k))

    @property
    def chosen(self) -> str:
        return self.candidates[self.order[0]]

    @property
    def rank(self) -> int:
        return self.order.index(self.candidates.index(self.true_item)) + 1

    @property
    def reward(self) -> float:
        """L = 1 when the top item is the true one, else 0."""
        return 1.0 if self.chosen == self.true_item else 0.0

    @property
    def rank_signal(self) -> float:
        """1 / rank of the true item."""
        return 1.0 / self.rank

    @property
    def rival(self) -> str:
        """What the truth competed with: the chosen item, or the best other when right."""
        for k in self.order:
            if self.candidates[k] != self.true_item:
                return self.candidates[k]
        return self.true_item


# -- what each client took in ---------------------------------------------------------------------


@dataclass(slots=True)
class Received:
    """What a client last got from one router and how much of its propagated profile it shaped."""

    message: RouterMessage  # the latest message from this router
    decision: Decision
    rule_id: str | None
    share: float = 0.0  # decayed share of accepted propagated weight
    missed: float = 0.0  # decayed share its rejected or dropped messages would have had


class ContributionLog:
    """Per client, per router: the latest message, its decision and decayed shares.

    Fed with every merge of the forward phase (``observe``); read by the gradient (router parts,
    rejected messages) and by the backward phase's validation probe (recent messages).
    """

    def __init__(self, damping: float) -> None:
        self.damping = damping
        self.clients: dict[str, dict[str, Received]] = {}

    def observe(
        self,
        client_id: str,
        messages: Sequence[RouterMessage],
        decisions: Sequence[tuple[Decision, str | None]],
    ) -> None:
        """Record one merge: the flushed messages and the filter memory's decisions."""
        if not messages:
            return
        entries = self.clients.setdefault(client_id, {})
        weights = [max(m.score, 1e-3) for m in messages]
        accepted = sum(w for w, (d, _) in zip(weights, decisions, strict=True) if d == "accepted")
        every = sum(weights)
        d = self.damping
        if accepted > 0:
            for entry in entries.values():
                entry.share *= 1.0 - d
        for entry in entries.values():
            entry.missed *= 1.0 - d
        for message, weight, (decision, rule_id) in zip(messages, weights, decisions, strict=True):
            entry = entries.get(message.router_id)
            if entry is None:
                entry = entries[message.router_id] = Received(message, decision, rule_id)
            else:
                entry.message, entry.decision, entry.rule_id = message, decision, rule_id
            if decision == "accepted":
                entry.share += d * weight / accepted
            else:
                entry.missed += d * weight / every
        for router_id in [
            r
            for r, e in entries.items()
            if e.share < _MIN_SHARE and e.missed < _MIN_SHARE and e.message.step < messages[-1].step
        ]:
            del entries[router_id]

    def received(self, client_id: str) -> dict[str, Received]:
        return self.clients.get(client_id, {})

    def router_parts(self, client_id: str, propagated: Mapping[str, float]) -> dict[str, Weights]:
        """Each router's part of ``propagated``: share × last message, scaled to its norm."""
        entries = {r: e for r, e in self.received(client_id).items() if e.share >= _MIN_SHARE}
        if not entries or not propagated:
            return {}
        raw = {
            r: {a: e.share * w for a, w in e.message.attributes.items()} for r, e in entries.items()
        }
        model: Weights = {}
        for part in raw.values():
            for a, w in part.items():
                model[a] = model.get(a, 0.0) + w
        total = norm(model)
        if total == 0.0:
            return {}
        scale = norm(propagated) / total
        return {r: {a: scale * w for a, w in part.items()} for r, part in raw.items()}

    def missed_part(
        self, client_id: str, propagated: Mapping[str, float], original: Mapping[str, float]
    ) -> tuple[Weights, list[Received]]:
        """What the rejected or dropped messages would have added, and those messages."""
        entries = self.received(client_id)
        missed = [
            e for e in entries.values() if e.missed >= _MIN_SHARE and e.decision != "accepted"
        ]
        if not missed:
            return {}, []
        accepted = [e for e in entries.values() if e.share >= _MIN_SHARE]
        model: Weights = {}
        for e in accepted:
            for a, w in e.message.attributes.items():
                model[a] = model.get(a, 0.0) + e.share * w
        total = norm(model)
        scale = norm(propagated) / total if propagated and total > 0 else norm(original)
        part: Weights = {}
        for e in missed:
            for a, w in e.message.attributes.items():
                part[a] = part.get(a, 0.0) + scale * e.missed * w
        return part, missed


@dataclass(slots=True)
class Side:
    """One client in a prediction: its original and propagated profile and popularity prior."""

    original: Weights
    propagated: Weights
    popularity: float = 0.0


def _cos(a: Mapping[str, float], b: Mapping[str, float], na: float, nb: float) -> float:
    return dot(a, b) / (na * nb) if na > 0 and nb > 0 else 0.0


class Margin:
    """``score(u, t) − score(u, r)`` and its first-order gradients w.r.t. each effective profile."""

    def __init__(self, scorer: OfflineScorer, user: Side, true: Side, rival: Side) -> None:
        self.scorer = scorer
        self.user, self.true, self.rival = user, true, rival
        self.value = self.compute(user.propagated, true.propagated, rival.propagated)
        u = scorer.effective(user.original, user.propagated)
        t = scorer.effective(true.original, true.propagated)
        r = scorer.effective(rival.original, rival.propagated)
        nu, nt, nr = norm(u), norm(t), norm(r)
        cut, cur = _cos(u, t, nu, nt), _cos(u, r, nu, nr)
        self.grad_user = _grad_pair(u, nu, t, nt, cut, +1.0)
        for a, g in _grad_pair(u, nu, r, nr, cur, -1.0).items():
            self.grad_user[a] = self.grad_user.get(a, 0.0) + g
        self.grad_true = _grad_pair(t, nt, u, nu, cut, +1.0)
        self.grad_rival = _grad_pair(r, nr, u, nu, cur, -1.0)

    def compute(
        self,
        user_prop: Mapping[str, float],
        true_prop: Mapping[str, float],
        rival_prop: Mapping[str, float],
    ) -> float:
        s = self.scorer
        u = s.effective(self.user.original, user_prop)
        t = s.effective(self.true.original, true_prop)
        r = s.effective(self.rival.original, rival_prop)
        nu = norm(u)
        prior = s.popularity_weight * (self.true.popularity - self.rival.popularity)
        return _cos(u, t, nu, norm(t)) - _cos(u, r, nu, norm(r)) + prior

    def harm(self, part: Mapping[str, float], on: Literal["user", "true", "rival"]) -> Weights:
        """First-order drop of the margin caused by ``part`` in ``on``'s propagated profile."""
        grad = {"user": self.grad_user, "true": self.grad_true, "rival": self.grad_rival}[on]
        w = self.scorer.propagated_weight
        return {a: -w * v * grad.get(a, 0.0) for a, v in part.items()}


def _grad_pair(
    x: Mapping[str, float], nx: float, y: Mapping[str, float], ny: float, c: float, sign: float
) -> Weights:
    """``sign · ∂cos(x, y)/∂x`` = sign · (ŷ − cos · x̂) / |x|."""
    if nx == 0.0 or ny == 0.0:
        return {}
    grad = {a: sign * (w / ny) / nx for a, w in y.items()}
    for a, w in x.items():
        grad[a] = grad.get(a, 0.0) - sign * c * (w / nx) / nx
    return grad


def _subtract(base: Mapping[str, float], part: Mapping[str, float]) -> Weights:
    return add_scaled(base, part, -1.0) if part else dict(base)


def _judge(effect: float, tolerance: float) -> Judgement:
    if effect > tolerance:
        return "positive"
    if effect < -tolerance:
        return "negative"
    return "neutral"


def _top_harm(harm: Mapping[str, float], n: int = 8) -> dict[str, float]:
    ranked = sorted(((a, h) for a, h in harm.items() if h > 0), key=lambda kv: (-kv[1], kv[0]))
    return {a: round(h, 6) for a, h in ranked[:n]}


def _names(attributes: Mapping[str, float]) -> str:
    return ", ".join(list(attributes)[:_SHOWN]) or "no single attribute"


# -- the gradient ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GradientInput:
    """Everything the offline gradient reads for one prediction (no world access)."""

    feedback: Feedback
    user: Side
    true: Side
    rival: Side
    rival_id: str
    router_parts: Mapping[str, Mapping[str, Weights]]  # side name → router id → part
    missed: Weights  # what rejected messages would have added to the user's propagated profile
    missed_messages: tuple[Received, ...]
    accepted_scores: Mapping[str, float]  # router id → routing score of its accepted message
    rule_ids: tuple[str, ...]  # the user's filter rules, in order
    #: What the user's min_relevance rule compares, per accepted router message (router id →
    #: value) and per missed message (in order); None = their routing scores (the old meaning).
    accepted_relevance: Mapping[str, float] | None = None
    missed_relevance: tuple[float, ...] | None = None


def counterfactual_gradient(
    task: GradientInput, scorer: OfflineScorer, tolerance: float
) -> list[ModuleJudgement]:
    """Judge the user's propagated profile, filter memory and every contributing router."""
    fb = task.feedback
    margin = Margin(scorer, task.user, task.true, task.rival)
    up, tp, rp = task.user.propagated, task.true.propagated, task.rival.propagated
    vs = f"the true item {fb.true_item} over {task.rival_id}"
    out: list[ModuleJudgement] = []

    # propagated profile
    effect = margin.value - margin.compute({}, tp, rp)
    harm = _top_harm(margin.harm(up, "user"))
    judgement = _judge(effect, tolerance)
    if not up:
        reason, suggestion = "The user has no propagated profile yet.", NO_ADJUSTMENT
    elif judgement == "negative":
        reason = (
            f"Without the propagated profile the margin of {vs} would be {-effect:.3f} higher; "
            f"community signals pulled the user towards {_names(harm)}."
        )
        suggestion = (
            f"Dampen {_names(harm)} in the propagated profile and take in fewer community "
            "updates (raise the minimum relevance, lower the maximum share)."
        )
    else:
        word = "raised" if judgement == "positive" else "barely changed"
        reason = f"The propagated profile {word} the margin of {vs} ({effect:+.3f})."
        suggestion = NO_ADJUSTMENT
    relevant = task.accepted_scores if task.accepted_relevance is None else task.accepted_relevance
    scores = tuple(sorted(relevant.values(), reverse=True))
    out.append(
        ModuleJudgement(
            "propagated_profile",
            fb.user_id,
            judgement,
            reason,
            suggestion,
            effect,
            harm,
            (),
            scores,
            fb.user_id,
        )
    )

    # filter memory
    rejecting = tuple(dict.fromkeys(e.rule_id for e in task.missed_messages if e.rule_id))
    missed_scores = tuple(
        sorted(
            (e.message.score for e in task.missed_messages)
            if task.missed_relevance is None
            else task.missed_relevance
        )
    )
    if task.missed:
        effect = margin.value - margin.compute(add_scaled(up, task.missed, 1.0), tp, rp)
    else:
        effect = 0.0
    judgement = _judge(effect, tolerance)
    helpful = _top_harm({a: -h for a, h in margin.harm(task.missed, "user").items()})
    if not task.missed_messages:
        reason, suggestion = "The filter memory rejected nothing recently.", NO_ADJUSTMENT
    elif judgement == "negative":
        routers = ", ".join(e.message.router_id for e in task.missed_messages[:_SHOWN])
        reason = (
            f"Messages the filter memory rejected (from {routers}, by "
            f"{', '.join(rejecting) or 'overflow'}) would have raised the margin of {vs} by "
            f"{-effect:.3f}, bringing in {_names(helpful)}."
        )
        suggestion = (
            f"Loosen {', '.join(rejecting) or 'the filter rules'} so that updates scoring "
            f"{missed_scores[-1]:.2f} or less get through."
        )
    else:
        word = "helped" if judgement == "positive" else "made little difference to"
        reason = f"Rejecting {len(task.missed_messages)} message(s) {word} the margin of {vs}."
        suggestion = NO_ADJUSTMENT
    out.append(
        ModuleJudgement(
            "filter_memory",
            fb.user_id,
            judgement,
            reason,
            suggestion,
            effect,
            helpful,
            rejecting,
            missed_scores,
            fb.user_id,
        )
    )

    # routers
    sides = {"user": up, "true": tp, "rival": rp}
    routers = sorted(
        {r for parts in task.router_parts.values() for r in parts}, key=lambda r: (len(r), r)
    )
    for router_id in routers:
        without = {
            side: _subtract(profile, task.router_parts.get(side, {}).get(router_id, {}))
            for side, profile in sides.items()
        }
        effect = margin.value - margin.compute(without["user"], without["true"], without["rival"])
        total: Weights = {}
        reached = []
        for side in ("user", "true", "rival"):
            part = task.router_parts.get(side, {}).get(router_id)
            if not part:
                continue
            reached.append(
                {"user": "the user", "true": "the true item", "rival": "the rival"}[side]
            )
            for a, h in margin.harm(part, side).items():  # type: ignore[arg-type]
                total[a] = total.get(a, 0.0) + h
        harm = _top_harm(total)
        judgement = _judge(effect, tolerance)
        via = " and ".join(reached)
        if judgement == "negative":
            reason = (
                f"{router_id}'s messages to {via} lowered the margin of {vs} by {-effect:.3f}, "
                f"mostly through {_names(harm)}."
            )
            suggestion = (
                f"Drop {_names(harm)} from {router_id}'s profile or raise its τ; split it if "
                "its community is mixed."
            )
        else:
            word = "raised" if judgement == "positive" else "barely changed"
            reason = f"{router_id}'s messages to {via} {word} the margin of {vs} ({effect:+.3f})."
            suggestion = NO_ADJUSTMENT
        score = task.accepted_scores.get(router_id)
        out.append(
            ModuleJudgement(
                "router",
                router_id,
                judgement,
                reason,
                suggestion,
                effect,
                harm,
                (),
                () if score is None else (score,),
                fb.user_id,
            )
        )
    return out

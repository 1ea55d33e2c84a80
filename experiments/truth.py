"""Scoring a run's propagation against the synthetic world's planted ground truth.

Pipeline position: used by ``experiments/propagation_truth.py`` after a run on a synthetic
dataset. Reads the trace (``steps``, ``interactions``, ``router_versions``, ``messages``) with
``sqlite3`` and the dataset's ``GroundTruth`` (planted communities, ``DriftEvent``s).

**Who should receive an update.** One *multicast* is one sender (a router, or a client in
point-to-point mode) sending at one step; its *recipients* are every ``messages`` row of that
sender and step, whatever happened to them later (buffered, accepted, rejected, dropped).

1. *Topic.* A router's update is what integration added at that step: the positive part of its
   new profile minus its previous version. Each attribute maps to a planted community (genre/tag
   names through ``community_attributes``; ``title:item X`` through the item's community); the
   topic ``T`` is the community holding the largest share of that mass (its share = *purity*). A
   client sender (point-to-point) is scored the same way on its own profile at that step and its
   previous version (``profile_versions``; run with ``trace.profile_every=1`` so that every
   changed profile is written at every step); without a recorded profile its topic falls back to
   the ground truth (an item's community, a user's currently preferred community).
2. *Causing clients.* The step's interactions whose item belongs to ``T`` and that were in-taste
   (the user's community preferred ``T`` at that time, per the drift schedule): these are the
   changes perception routed to the router. Noise choices (outside the user's taste) are not
   counted as causes. A client sender is its own cause.
3. *Should receive* ``S`` = the members of the planted communities of the causing clients: users
   of the causing users' communities, and items of ``T``. When a step has no in-taste causing
   interaction, the users of the communities preferring ``T`` at the step's end stand in. A
   client sender is its own cause: a user stands for its community, an item for the communities
   preferring ``T``.

Precision = |recipients ∩ S| / |recipients|, recall = |recipients ∩ S| / |S|, micro-averaged over
multicasts (sums, then the ratio). *Chance precision* is the mean |S| / (all clients): what
sending to random clients would score.

**Time to reach a drift.** A ``DriftEvent`` (time t, community c, new attributes = those of
community d) starts at step s0, the first step whose last interaction is at or after t. A
message *carries* the new attributes when its sender's profile at the send step puts at least
``carry_share`` of its community-mapped weight on d (a client sender: when its topic is d). For
each user of c: the first step ≥ s0 at which it received a carrying message; reported as the
share of c reached within ``window`` steps after s0 (and, for comparison, within the ``window``
steps before s0), the median delay in steps and days, the steps until half of c was reached, and
the share reached *ahead* of their own first post-drift choice of a d item (propagation told them
before their own interactions did).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recnet.data.types import Dataset, GroundTruth

DAY = 86_400


@dataclass
class World:
    """Ground truth in the trace's agent-id space (``u:<user>``, ``i:<item>``)."""

    user_comm: dict[str, int]
    item_comm: dict[str, int]
    attr_comm: dict[str, int]  # attribute name (without the "genre:"/"tag:" prefix) → community
    title_comm: dict[str, int]  # lower-cased item title → community
    changes: dict[int, list[tuple[int, int]]]  # community → [(timestamp, new preferred), ...]
    drifts: list[tuple[int, int, int]]  # (timestamp, community, new preferred community)

    def preferred(self, community: int, timestamp: int) -> int:
        current = community
        for ts, target in self.changes.get(community, []):
            if ts <= timestamp:
                current = target
        return current

    def users_of(self, communities: Iterable[int]) -> set[str]:
        wanted = set(communities)
        return {u for u, c in self.user_comm.items() if c in wanted}

    def items_of(self, communities: Iterable[int]) -> set[str]:
        wanted = set(communities)
        return {i for i, c in self.item_comm.items() if c in wanted}

    def community_of_attribute(self, attribute: str) -> int | None:
        kind, _, value = attribute.partition(":")
        if kind == "title":
            return self.title_comm.get(value)
        return self.attr_comm.get(value)

    def masses(self, weights: dict[str, float]) -> dict[int, float]:
        out: dict[int, float] = defaultdict(float)
        for attribute, weight in weights.items():
            community = self.community_of_attribute(attribute)
            if community is not None and weight > 0:
                out[community] += weight
        return dict(out)


def world_from_dataset(dataset: Dataset) -> World:
    truth: GroundTruth | None = dataset.ground_truth
    if truth is None:
        raise ValueError(f"dataset {dataset.name!r} has no ground truth (use kind: synthetic)")
    attr_comm = {a: c for c, attrs in truth.community_attributes.items() for a in attrs}
    by_attrs = {tuple(attrs): c for c, attrs in truth.community_attributes.items()}
    changes: dict[int, list[tuple[int, int]]] = defaultdict(list)
    drifts = []
    for drift in truth.drifts:
        target = by_attrs[tuple(drift.to_attributes)]
        changes[drift.community].append((drift.timestamp, target))
        drifts.append((drift.timestamp, drift.community, target))
    return World(
        user_comm={f"u:{u}": c for u, c in truth.user_community.items()},
        item_comm={f"i:{i}": c for i, c in truth.item_community.items()},
        attr_comm=attr_comm,
        title_comm={
            dataset.items[i].title.lower(): c
            for i, c in truth.item_community.items()
            if i in dataset.items
        },
        changes={c: sorted(v) for c, v in changes.items()},
        drifts=sorted(drifts),
    )


@dataclass
class Trace:
    """The parts of a trace the scoring needs, as plain Python data."""

    step_last_ts: dict[int, int]
    interactions: dict[int, list[tuple[str, str, int]]]  # step → [(user, item, timestamp)]
    profiles: dict[tuple[str, int], dict[str, float]]  # (router, step) → profile it multicast
    previous: dict[tuple[str, int], dict[str, float]]  # (router, step) → its version before
    recipients: dict[tuple[str, int], set[str]]  # (sender, step) → recipients
    accepted: dict[tuple[str, int], set[str]]
    clients: set[str] = field(default_factory=set)
    client_profiles: dict[str, list[tuple[int, dict[str, float]]]] = field(default_factory=dict)

    def client_versions(self, agent: str, step: int) -> tuple[dict[str, float], dict[str, float]]:
        """A client's recorded profile at ``step`` (latest version at or before it) and the
        version before that; empty mappings when nothing is recorded."""
        versions = self.client_profiles.get(agent, [])
        at = [k for k, (s, _) in enumerate(versions) if s <= step]
        if not at:
            return {}, {}
        k = at[-1]
        return versions[k][1], versions[k - 1][1] if k > 0 else {}


def load_trace(path: Path | str) -> Trace:
    uri = f"file:{Path(path).resolve()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as con:
        step_last_ts = {
            s: int(t or 0) for s, t in con.execute("select step, last_timestamp from steps")
        }
        interactions: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
        for step, user, item, ts in con.execute(
            "select step, user_id, item_id, timestamp from interactions order by seq"
        ):
            interactions[step].append((user, item, int(ts or 0)))
        profiles: dict[tuple[str, int], dict[str, float]] = {}
        previous: dict[tuple[str, int], dict[str, float]] = {}
        last: dict[str, dict[str, float]] = {}
        for router, step, attrs, reason in con.execute(
            "select router_id, step, attributes_json, reason from router_versions "
            "order by router_id, version"
        ):
            weights = json.loads(attrs)
            if reason == "integrate":  # integration is followed by the multicast
                profiles[(router, step)] = weights
                previous[(router, step)] = last.get(router, {})
            last[router] = weights
        recipients: dict[tuple[str, int], set[str]] = defaultdict(set)
        accepted: dict[tuple[str, int], set[str]] = defaultdict(set)
        for sender, step, client, status in con.execute(
            "select router_id, step, client_id, status from messages"
        ):
            recipients[(sender, step)].add(client)
            if status == "accepted":
                accepted[(sender, step)].add(client)
        clients = {a for (a,) in con.execute("select agent_id from agents where kind != 'router'")}
        senders = {sender for sender, _ in recipients if not sender.startswith("r:")}
        client_profiles: dict[str, list[tuple[int, dict[str, float]]]] = defaultdict(list)
        if senders:
            for agent, step, attrs in con.execute(
                "select agent_id, step, attributes_json from profile_versions "
                "where kind = 'original' order by agent_id, step, id"
            ):
                if agent in senders:
                    client_profiles[agent].append((step, json.loads(attrs)))
    return Trace(
        step_last_ts, dict(interactions), profiles, previous, dict(recipients), dict(accepted),
        clients, dict(client_profiles),
    )  # fmt: skip


@dataclass
class Multicast:
    sender: str
    step: int
    topic: int | None
    purity: float
    carries: set[int]
    recipients: set[str]
    accepted: set[str]
    should: set[str]


def content(
    world: World, new: dict[str, float], old: dict[str, float], carry_share: float
) -> tuple[int | None, float, set[int]]:
    """(topic, purity, carried communities) of a sender's profile ``new`` after ``old``."""
    delta = world.masses(positive_delta(new, old))
    mass = delta or world.masses(new)
    total = sum(mass.values())
    topic = max(mass, key=mass.__getitem__) if mass else None
    purity = mass[topic] / total if topic is not None and total else 0.0
    profile_mass = world.masses(new)
    profile_total = sum(profile_mass.values())
    carries = {
        c for c, m in profile_mass.items() if profile_total and m / profile_total >= carry_share
    }
    return topic, purity, carries


def positive_delta(new: dict[str, float], old: dict[str, float]) -> dict[str, float]:
    return {a: w - old.get(a, 0.0) for a, w in new.items() if w - old.get(a, 0.0) > 0}


def multicasts(trace: Trace, world: World, carry_share: float = 0.3) -> list[Multicast]:
    """Every multicast with its topic, what it carries and who should have received it."""
    senders = set(trace.recipients)
    senders |= set(trace.profiles)  # routers that integrated but reached nobody count too
    out = []
    for sender, step in sorted(senders, key=lambda k: (k[1], k[0])):
        last_ts = trace.step_last_ts.get(step, 0)
        if sender.startswith("r:"):
            new = trace.profiles.get((sender, step), {})
            old = trace.previous.get((sender, step), {})
        else:
            new, old = trace.client_versions(sender, step)
        topic, purity, carries = content(world, new, old, carry_share)
        if sender.startswith("r:"):
            causes = [
                (u, i)
                for u, i, ts in trace.interactions.get(step, [])
                if topic is not None
                and world.item_comm.get(i) == topic
                and world.preferred(world.user_comm.get(u, -1), ts) == topic
            ]
            home = {world.user_comm[u] for u, _ in causes if u in world.user_comm}
            if not home and topic is not None:
                home = {
                    c for c in set(world.user_comm.values()) if world.preferred(c, last_ts) == topic
                }
        else:
            if topic is None:  # no recorded profile: fall back to the ground truth
                purity = 1.0
                if sender in world.user_comm:
                    topic = world.preferred(world.user_comm[sender], last_ts)
                else:
                    topic = world.item_comm.get(sender)
                carries = {topic} if topic is not None else set()
            if sender in world.user_comm:
                home = {world.user_comm[sender]}
            else:
                home = {
                    c for c in set(world.user_comm.values()) if world.preferred(c, last_ts) == topic
                }
        should = world.users_of(home) | (world.items_of([topic]) if topic is not None else set())
        out.append(
            Multicast(
                sender, step, topic, purity, carries, trace.recipients.get((sender, step), set()),
                trace.accepted.get((sender, step), set()), should,
            )
        )  # fmt: skip
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def precision_recall(casts: list[Multicast], n_clients: int) -> dict[str, float]:
    """Micro-averaged precision/recall of recipients (all, users only, accepted) vs ``should``."""
    hit = sum(len(m.recipients & m.should) for m in casts)
    sent = sum(len(m.recipients) for m in casts)
    should = sum(len(m.should) for m in casts)
    u_hit = sum(len({c for c in m.recipients & m.should if c.startswith("u:")}) for m in casts)
    u_sent = sum(len({c for c in m.recipients if c.startswith("u:")}) for m in casts)
    u_should = sum(len({c for c in m.should if c.startswith("u:")}) for m in casts)
    a_hit = sum(len(m.accepted & m.should) for m in casts)
    a_sent = sum(len(m.accepted) for m in casts)
    precision, recall = _ratio(hit, sent), _ratio(hit, should)
    return {
        "multicasts": len(casts),
        "recipients_per_multicast": _ratio(sent, len(casts)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "user_precision": _ratio(u_hit, u_sent),
        "user_recall": _ratio(u_hit, u_should),
        "accepted_precision": _ratio(a_hit, a_sent),
        "chance_precision": _ratio(should, len(casts) * n_clients) if n_clients else float("nan"),
        "topic_purity": float(np.mean([m.purity for m in casts])) if casts else float("nan"),
    }


def drift_reach(
    casts: list[Multicast], trace: Trace, world: World, window: int
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Per drift: reach metrics (see the module docstring) and the per-step share of the drifting
    community that received a carrying message, for steps s0-window .. s0+window-1."""
    steps = sorted(trace.step_last_ts)
    rows, curves = [], []
    for timestamp, community, target in world.drifts:
        s0 = next((s for s in steps if trace.step_last_ts[s] >= timestamp), None)
        if s0 is None:
            continue
        users = world.users_of([community])
        received: dict[int, set[str]] = defaultdict(set)
        for m in casts:
            if target in m.carries:
                received[m.step] |= m.recipients & users
        first: dict[str, int] = {}
        for step in sorted(received):
            if step >= s0:
                for user in received[step]:
                    first.setdefault(user, step)
        own: dict[str, int] = {}
        for step in steps:
            if step < s0:
                continue
            for user, item, _ in trace.interactions.get(step, []):
                if user in users and world.item_comm.get(item) == target:
                    own.setdefault(user, step)
        before = set().union(*(received.get(s, set()) for s in range(s0 - window, s0)))
        after = {u for u, s in first.items() if s < s0 + window}
        delays = sorted(s - s0 for s in first.values())
        half = len(users) / 2
        to_half = next((d for k, d in enumerate(delays) if k + 1 >= half), None)
        days = [(trace.step_last_ts[s] - timestamp) / DAY for s in first.values()]
        ahead = sum(1 for u in users if u in first and first[u] < own.get(u, 10**9))
        rows.append(
            {
                "drift_time": timestamp,
                "community": community,
                "new_community": target,
                "drift_step": s0,
                "users": len(users),
                "reached_after": _ratio(len(after), len(users)),
                "reached_before": _ratio(len(before), len(users)),
                "reached_ever": _ratio(len(first), len(users)),
                "median_delay_steps": float(np.median(delays)) if delays else float("nan"),
                "median_delay_days": float(np.median(days)) if days else float("nan"),
                "steps_to_half": float(to_half) if to_half is not None else float("nan"),
                "ahead_of_own_choice": _ratio(ahead, len(users)),
            }
        )
        curves.append(
            np.array(
                [len(received.get(s0 + k, set())) / len(users) for k in range(-window, window)]
            )
        )
    return rows, curves

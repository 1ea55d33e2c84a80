"""Build the initial ``World`` from a dataset and initial profiles (DESIGN §2, initialisation).

Pipeline position: after the dataset is loaded and split, before the phase loop. Attributes of all
initial profiles are embedded and clustered into K groups; each group becomes a router whose
profile summarises the attributes its community shares. Every client joins the routers it is
similar enough to (and always its nearest one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from recnet.config.scenario import Scenario
from recnet.data.types import Dataset, Interaction
from recnet.world.agents import ClientAgent, RouterAgent, item_agent_id, user_agent_id
from recnet.world.buffer import MessageBuffer
from recnet.world.embedding import AttributeSpace, Embedder
from recnet.world.profile import Weights, normalized, top
from recnet.world.routing import cluster_points, unit_rows
from recnet.world.rules import FilterMemory, default_rules
from recnet.world.world import World


def build_world(
    dataset: Dataset,
    scenario: Scenario,
    embedder: Embedder,
    item_profiles: Mapping[str, Weights],
    user_profiles: Mapping[str, Weights],
    rng: np.random.Generator,
    item_texts: Mapping[str, str] | None = None,
) -> World:
    """Create clients, routers and the graph. ``item_profiles``/``user_profiles`` are keyed by
    dataset id and come from the brain's *extract* operation."""
    settings = scenario.world
    space = AttributeSpace(embedder)
    filters = FilterMemory(
        default_rules(settings.filters),
        max_rules=settings.filters.max_rules,
        relevance=settings.filters.relevance,
    )
    world = World(space, filters)

    def make(kind: str, key: str, label: str, profile: Weights) -> ClientAgent:
        agent_id = user_agent_id(key) if kind == "user" else item_agent_id(key)
        return ClientAgent(
            agent_id=agent_id,
            kind=kind,  # type: ignore[arg-type]
            key=key,
            label=label,
            original=top(profile, settings.profile_size),
            buffer=MessageBuffer(settings.buffer.capacity, settings.buffer.overflow),
            filters=filters,
            text=(item_texts or {}).get(key) if kind == "item" else None,
        )

    all_attributes = [a for p in item_profiles.values() for a in p]
    all_attributes += [a for p in user_profiles.values() for a in p]
    space.add(sorted(set(all_attributes)))

    users = [make("user", u, f"user {u}", user_profiles.get(u, {})) for u in dataset.users]
    items = [
        make("item", key, item.title, item_profiles.get(key, {}))
        for key, item in dataset.items.items()
    ]
    world.add_clients(users + items)
    for interaction in dataset.interactions:
        world.history.setdefault(user_agent_id(interaction.user), set()).add(
            item_agent_id(interaction.item)
        )

    for router in initial_routers(world, item_profiles.values(), scenario, rng):
        world.add_router(router)
    world.max_memberships = scenario.propagation.max_memberships
    world.membership_ratio = scenario.propagation.membership_ratio
    world.update_memberships()
    return world


def initial_routers(
    world: World, profiles: Iterable[Weights], scenario: Scenario, rng: np.random.Generator
) -> list[RouterAgent]:
    """Cluster attribute embeddings into K routers.

    An attribute's embedding for clustering is its own embedding plus the mean embedding of the
    profiles that carry it, so attributes that occur together (a genre and its typical tags and
    titles) land in one community even when their names share no words.
    """
    profiles = list(profiles)
    frequency: Counter[str] = Counter(a for p in profiles for a, w in p.items() if w > 0)
    if not frequency:
        return []
    names = sorted(frequency)
    space = world.space
    position = {a: i for i, a in enumerate(names)}
    context = np.zeros((len(names), space.dim), dtype=np.float32)
    for profile in profiles:
        if not profile:
            continue
        vector = space.embed_weights(profile)
        rows = [position[a] for a, w in profile.items() if w > 0]
        context[rows] += vector
    counts = np.array([frequency[a] for a in names], dtype=np.float32)[:, None]
    own = space.matrix[[space.index[a] for a in names]]
    points = unit_rows(own + unit_rows(context / counts))
    k = min(scenario.world.n_routers, len(names))
    labels, _ = cluster_points(points, k, rng)
    routers = []
    for cluster in range(k):
        members = [names[i] for i in np.flatnonzero(labels == cluster)]
        weights = {a: float(np.log1p(frequency[a])) for a in members}
        profile = normalized(top(weights, scenario.world.router_profile_size))
        routers.append(
            RouterAgent(
                router_id=world.new_router_id(),
                profile=profile,
                tau=scenario.propagation.tau,
            )
        )
    return routers


def history_profiles(
    train: Iterable[Interaction], item_profiles: Mapping[str, Weights], n_items: int
) -> dict[str, Weights]:
    """User profiles seeded from each user's first ``n_items`` training items (history init)."""
    seen: dict[str, list[str]] = {}
    for interaction in train:
        items = seen.setdefault(interaction.user, [])
        if len(items) < n_items:
            items.append(interaction.item)
    profiles: dict[str, Weights] = {}
    for user, items in seen.items():
        merged: Weights = {}
        for item in items:
            for a, w in normalized(item_profiles.get(item, {})).items():
                merged[a] = merged.get(a, 0.0) + w / len(items)
        profiles[user] = merged
    return profiles

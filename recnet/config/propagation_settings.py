"""Pydantic model of a scenario's ``propagation`` block: the forward phase's routing and the
router trends users rank with.

Pipeline position: part of the scenario (``recnet.config.scenario.Scenario.propagation``); read by
the forward phase (``recnet.phases.forward``), the perception and routing policies
(``recnet.world.policies``, ``recnet.world.communities``) and the router trends
(``recnet.world.trend``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recnet.config.checks import PerceptionName, RoutingName
from recnet.config.llm_settings import Section

#: Default ``trend_share``: off (experiments/README.md, "Router trends").
TREND_SHARE = 0.0


class PropagationSettings(Section):
    """Forward propagation (steps 2-5): perceive, integrate, multicast, receive."""

    enabled: bool = Field(True, description="Switch propagation off to compare against AgentCF.")
    mode: Literal["routers", "point_to_point"] = Field(
        "routers",
        description="Propagate through routers (RecNet) or directly from each changed client to "
        "its most similar clients (the 'point-to-point' ablation, no routers).",
    )
    neighbours: int = Field(
        10, ge=1, description="Recipients per changed client when mode=point_to_point."
    )
    update_size: int = Field(
        20, ge=1, description="Training interactions per step (Updatesize in the paper)."
    )
    tau: float = Field(
        0.35,
        ge=-1.0,
        le=1.0,
        description="Multicast threshold on cos(router, client). The default suits the hashing "
        "embedder (see README, 'Choosing tau'); the paper's 0.7-0.9 is for dense sentence "
        "embeddings.",
    )
    max_memberships: int | None = Field(
        3,
        ge=1,
        description="A client belongs to at most this many routers: its strongest with cos >= "
        "tau (always at least its best one). null = every router above tau (the paper). The cap "
        "keeps membership edges, and the routers a change reaches under membership perception, "
        "from growing with the number of routers: with 400 routers (30k agents) an uncapped "
        "client was in 37 routers on average; on the shipped scenarios clients average 1.0-1.3 "
        "and the cap moves their metrics by noise (experiments/README.md).",
    )
    membership_ratio: float | None = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="A router other than a client's best is a membership only at cos >= this "
        "share of the best router's cos (null = no such condition). 0.9 keeps messages per "
        "interaction flat with world size: without it most second and third memberships of "
        "large worlds went to other communities (experiments/README.md, 'Memberships').",
    )
    perception: PerceptionName = Field(
        "membership",
        description="Perception policy: which routers hear of a change (membership = the routers "
        "the changing client is a member of, its communities; nearest_router = the paper's "
        "argmax cos(attribute, router); interaction_communities = the router of the client's "
        "Louvain community of seen interactions; or a registered name, see "
        "recnet.registry.PERCEPTION).",
    )
    routing: RoutingName = Field(
        "members",
        description="Routing policy: multicast to the router's members (members), to clients "
        "above tau (threshold, the paper), to each router's top-k (top_k), to the members of its "
        "interaction communities (interaction_communities), or a registered name "
        "(recnet.registry.ROUTING).",
    )
    community_every: int = Field(
        50,
        ge=1,
        description="interaction_communities policies: rebuild the Louvain communities of the "
        "co-interaction graph at the latest after this many steps' worth of newly learned "
        "interactions (earlier while the learned interactions double).",
    )
    community_neighbours: int = Field(
        20,
        ge=1,
        description="interaction_communities policies: links each user keeps in the "
        "co-interaction graph (its strongest, by IDF-weighted shared items).",
    )
    community_resolution: float = Field(
        1.0,
        gt=0.0,
        description="interaction_communities policies: Louvain resolution (above 1 = smaller "
        "communities).",
    )
    message: Literal["profile", "delta"] = Field(
        "profile",
        description="What a router multicasts: its whole profile, or what changed in its "
        "community this step (the routed attribute changes, unit length).",
    )
    multicast_kinds: list[Literal["user", "item"]] = Field(
        default_factory=lambda: ["user", "item"],
        description="Which clients a multicast may reach: users, items or both (the paper).",
    )
    message_idle_clients: bool = Field(
        False,
        description="Also message clients that cannot act on it: items never interacted with "
        "and in no candidate list, users with no training interactions left and no test list.",
    )
    top_k: int = Field(50, ge=1, description="Recipients per router when routing=top_k.")
    max_recipients: int = Field(
        200,
        ge=1,
        description="Cap on recipients of one multicast (highest scores first). With members "
        "routing, keep it above the largest community (its users + items): a community larger "
        "than the cap is messaged only in part, and the lift shrinks (synthetic world with 800 "
        "users, communities of ~300 clients: +0.009 at 200, +0.024 at 400; experiments/README.md).",
    )
    changed_attributes: int = Field(
        8, ge=1, description="Attributes per changed client that enter perception (largest change)."
    )
    router_ema: float = Field(
        0.1, gt=0.0, le=1.0, description="Integration: weight of newly routed attributes."
    )
    merge_damping: float = Field(
        0.3, gt=0.0, le=1.0, description="Reception: damping of accepted router attributes."
    )
    trend_share: float = Field(
        TREND_SHARE,
        ge=0.0,
        description="Router trends: a user ranks items (prequential test, final test, the "
        "backward phase's feedback) with its effective profile plus this share of that "
        "profile's length along the trend of its routers, the unit sum of what each router's "
        "profile gained over its slow average "
        "(0 = off, the default). The offline brain adds it to the profile; an LLM brain's rank "
        "prompt names the trend's strongest attributes (its effect unmeasured). "
        "scenarios/synthetic.yaml sets 0.8 (prequential NDCG@10 lift over "
        "AgentCF-style +0.019 -> +0.055 on held-out seeds); on ml-latest-small it lowers final "
        "NDCG@10, so the library leaves it off. See experiments/README.md, 'Router trends'.",
    )
    trend_rate: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="Router trends: rate of each router's slow average of its own profile, per "
        "step (about 1 / the steps it remembers).",
    )

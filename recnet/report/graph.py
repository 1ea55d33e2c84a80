"""The router–client graph picture of the report (matplotlib → inline SVG).

Pipeline position: drawn by ``recnet.report.page`` from the memberships of the newest checkpoint
(``recnet.report.data.RouterGraph``). Routers sit on a ring, ordered so that routers sharing many
members are neighbours (networkx's spectral ordering of the overlap graph); each client is drawn
near its best router, coloured like it; edges are memberships. Large worlds are sampled
(``MAX_CLIENTS``, seeded) so the SVG stays small.
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np

from recnet.report.charts import Figure, _svg, mark
from recnet.report.data import RouterGraph

MAX_CLIENTS = 600
LABELLED_ROUTERS = 12


def router_order(routers: list[str], memberships: dict[str, dict[str, float]]) -> list[str]:
    """Routers ordered so that those sharing members are close (Fiedler vector of overlaps)."""
    overlap = nx.Graph()
    overlap.add_nodes_from(routers)
    for mine in memberships.values():
        for a, b in itertools.combinations(sorted(mine), 2):
            weight = overlap.get_edge_data(a, b, {"weight": 0})["weight"]
            overlap.add_edge(a, b, weight=weight + 1)
    if len(routers) < 3 or not nx.is_connected(overlap):
        return routers
    try:
        return list(nx.spectral_ordering(overlap, weight="weight", seed=0))
    except (nx.NetworkXError, np.linalg.LinAlgError):
        return routers


def graph_chart(graph: RouterGraph | None, seed: int = 0) -> str | None:
    """The router–client graph: routers sized by members, clients coloured by their router."""
    if graph is None:
        return None
    primary = {c: max(rs, key=rs.__getitem__) for c, rs in graph.memberships.items() if rs}
    if not primary:
        return None
    members: dict[str, int] = {}
    for routers in graph.memberships.values():
        for router in routers:
            members[router] = members.get(router, 0) + 1
    rng = np.random.default_rng(seed)
    clients = sorted(primary)
    if len(clients) > MAX_CLIENTS:
        clients = sorted(rng.choice(clients, MAX_CLIENTS, replace=False).tolist())
    by_id = sorted(members, key=lambda r: (len(r), r))
    routers = router_order(by_id, graph.memberships)
    k = len(routers)
    angles = 2 * np.pi * np.arange(k) / k
    centre = {r: np.array([np.cos(a), np.sin(a)]) for r, a in zip(routers, angles, strict=True)}
    if k == 1:
        centre[routers[0]] = np.zeros(2)
    sizes = np.array([members[r] for r in routers], dtype=float)
    cluster = min(0.6, np.pi / max(k, 2)) * np.sqrt(sizes / sizes.max())
    radius = dict(zip(routers, np.maximum(cluster, 0.04), strict=True))
    colour = {r: f"C{i % 10}" for i, r in enumerate(routers)}
    position = {}
    for client in clients:
        home = primary[client]
        angle, distance = rng.uniform(0, 2 * np.pi), radius[home] * np.sqrt(rng.uniform())
        position[client] = centre[home] + distance * np.array([np.cos(angle), np.sin(angle)])

    def build(figure: Figure, axes: list) -> bool:
        from matplotlib.collections import LineCollection

        ax = axes[0]
        ax.grid(False)
        ax.set_axis_off()
        ax.set_aspect("equal")
        segments = [[position[c], centre[r]] for c in clients for r in graph.memberships[c]]
        edges = LineCollection(segments, colors="#90a4ae", linewidths=0.3, alpha=0.3)
        ax.add_collection(edges)
        mark(edges)
        for prefix, marker, name in (("u:", "o", "users"), ("i:", "^", "items")):
            chosen = [c for c in clients if c.startswith(prefix)]
            if chosen:
                xy = np.array([position[c] for c in chosen])
                mark(
                    ax.scatter(
                        xy[:, 0],
                        xy[:, 1],
                        s=6,
                        marker=marker,
                        linewidths=0,
                        c=[colour[primary[c]] for c in chosen],
                        label=name,
                    )
                )
        xy = np.array([centre[r] for r in routers])
        mark(
            ax.scatter(
                xy[:, 0],
                xy[:, 1],
                s=25 + 350 * sizes / sizes.max(),
                c=[colour[r] for r in routers],
                edgecolors="black",
                linewidths=0.8,
                alpha=0.85,
                zorder=3,
            )
        )
        for r in sorted(routers, key=lambda r: -members[r])[:LABELLED_ROUTERS]:
            outward = centre[r] * (1.0 + radius[r] + 0.12)
            ax.annotate(
                f"{r} ({members[r]})", outward, fontsize=6.5, ha="center", va="center", zorder=4
            )
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=2.5)
        ax.set_title(
            f"after step {graph.step}: {k} routers with members, {len(primary):,} clients "
            f"({len(clients)} drawn); circle area = members",
            fontsize=8,
        )
        return True

    return _svg(build, height=4.4)

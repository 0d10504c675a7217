"""Overlay graph measures shared by the simulator and ``gossip crawl``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def components(n: int, edges: Sequence[tuple[int, int]] | np.ndarray, members: np.ndarray) -> list[int]:
    """Sizes of the connected components (links taken as undirected) among ``members``.

    ``members`` is a boolean mask; edges touching a non-member are ignored.
    Largest first.
    """
    parent = np.arange(n)

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:  # path compression
            parent[a], a = root, parent[a]
        return root

    for a, b in edges:
        if members[a] and members[b]:
            ra, rb = find(int(a)), find(int(b))
            if ra != rb:
                parent[ra] = rb
    roots = [find(i) for i in np.flatnonzero(members)]
    _, counts = np.unique(roots, return_counts=True)
    return sorted(counts.tolist(), reverse=True)


def overlay_metrics(edges: list[tuple[int, int]] | None, alive: np.ndarray) -> dict[str, float]:
    """``dead_link_fraction`` and ``largest_component_fraction`` of the live overlay.

    ``edges`` are the view entries of live nodes as (holder, target) indices.
    dead_link_fraction: share of them that point at dead nodes.
    largest_component_fraction: live nodes in the largest connected component
    of the overlay among live nodes, over all live nodes. ``edges`` None stands
    for the implicit full graph (every node links to every other).
    """
    live = int(alive.sum())
    n = len(alive)
    if live == 0:
        return {"dead_link_fraction": 0.0, "largest_component_fraction": 0.0}
    if edges is None:
        return {"dead_link_fraction": (n - live) / max(n - 1, 1), "largest_component_fraction": 1.0}
    dead = sum(1 for _, j in edges if not alive[j])
    return {
        "dead_link_fraction": dead / len(edges) if edges else 0.0,
        "largest_component_fraction": components(n, edges, alive)[0] / live,
    }


def indegree_stats(n: int, edges: Sequence[tuple[int, int]], members: np.ndarray) -> dict[str, float]:
    """In-degree mean, std and max over ``members``, counting links from members only."""
    counts = np.zeros(n)
    for a, b in edges:
        if members[a] and members[b]:
            counts[b] += 1
    deg = counts[members]
    if deg.size == 0:
        return {"mean": 0.0, "std": 0.0, "max": 0.0}
    return {"mean": float(deg.mean()), "std": float(deg.std()), "max": float(deg.max())}

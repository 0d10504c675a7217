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


def overlay_metrics(views: list[list[int]] | None, alive: np.ndarray) -> dict[str, float]:
    """``dead_link_fraction`` and ``largest_component_fraction`` of the live overlay.

    dead_link_fraction: share of the entries in live nodes' views that point at
    dead nodes. largest_component_fraction: live nodes in the largest connected
    component of the overlay among live nodes, over all live nodes. ``views``
    None stands for the implicit full graph (every node links to every other).
    """
    live = int(alive.sum())
    n = len(alive)
    if live == 0:
        return {"dead_link_fraction": 0.0, "largest_component_fraction": 0.0}
    if views is None:
        return {"dead_link_fraction": (n - live) / max(n - 1, 1), "largest_component_fraction": 1.0}
    edges = [(i, j) for i in np.flatnonzero(alive) for j in views[i]]
    total = len(edges)
    dead = sum(1 for _, j in edges if not alive[j])
    largest = components(n, edges, alive)[0]
    return {
        "dead_link_fraction": dead / total if total else 0.0,
        "largest_component_fraction": largest / live,
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

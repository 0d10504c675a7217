"""Overlay graph measures shared by the simulator and ``gossip crawl``.

Edges are ``(holder, target)`` index pairs: a list of tuples or an ``(E, 2)``
integer array. Everything is vectorised (the batched simulator measures
10^5-node overlays with 2 x 10^6 links); connected components come from
``scipy.sparse.csgraph`` (scipy is scikit-learn's own dependency).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Edges = Sequence[tuple[int, int]] | np.ndarray


def edge_array(edges: Edges) -> np.ndarray:
    """``edges`` as an ``(E, 2)`` int64 array (no copy if it already is one)."""
    arr = np.asarray(edges, dtype=np.int64)
    return arr.reshape(-1, 2)


def components(n: int, edges: Edges, members: np.ndarray) -> list[int]:
    """Sizes of the connected components (links taken as undirected) among ``members``.

    ``members`` is a boolean mask; edges touching a non-member are ignored.
    Largest first.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    members = np.asarray(members, dtype=bool)
    e = edge_array(edges)
    e = e[members[e[:, 0]] & members[e[:, 1]]]
    graph = coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    counts = np.bincount(labels[members], minlength=0) if members.any() else np.zeros(0, dtype=np.int64)
    return sorted((int(c) for c in counts if c > 0), reverse=True)


def overlay_metrics(edges: Edges | None, alive: np.ndarray) -> dict[str, float]:
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
    e = edge_array(edges)
    dead = int((~alive[e[:, 1]]).sum())
    return {
        "dead_link_fraction": dead / len(e) if len(e) else 0.0,
        "largest_component_fraction": components(n, e, alive)[0] / live,
    }


def indegree_stats(n: int, edges: Edges, members: np.ndarray) -> dict[str, float]:
    """In-degree mean, std and max over ``members``, counting links from members only."""
    e = edge_array(edges)
    e = e[members[e[:, 0]] & members[e[:, 1]]]
    counts = np.bincount(e[:, 1], minlength=n).astype(np.float64)
    deg = counts[members]
    if deg.size == 0:
        return {"mean": 0.0, "std": 0.0, "max": 0.0}
    return {"mean": float(deg.mean()), "std": float(deg.std()), "max": float(deg.max())}

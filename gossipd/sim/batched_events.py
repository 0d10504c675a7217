"""Events of the batched simulator: columns of arrays, a calendar of time slices,
and the split of one slice's events into conflict-free sub-rounds.

Every event acts on exactly one node (``dst``): a message's content was fixed
when it was sent (the sender's model, the entries of a shuffle), so events at
different nodes commute, and only the order of the events of one node matters.
:func:`subrounds` keeps that order: its r-th sub-round holds the r-th event of
each node in the slice, by time, so each sub-round is one vectorised step over
distinct nodes.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

# What a slice holds, by kind.
MODEL = "model"  # a pushed model arriving at dst
REQUEST = "request"  # a shuffle request arriving at dst
REPLY = "reply"  # a shuffle reply arriving back at the initiator dst
OUTCOME = "outcome"  # what became of a request, learnt by its sender dst


class Events(dict[str, np.ndarray]):
    """One kind's events: equal-length arrays by field (always ``t``, the time, and ``dst``)."""

    def __len__(self) -> int:  # the number of events, not of fields
        return int(self["t"].shape[0])

    def take(self, idx: np.ndarray) -> Events:
        return Events({k: v[idx] for k, v in self.items()})

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        if len(parts) == 1:
            return parts[0]
        return Events({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


class Calendar:
    """Events waiting for their slice. Slice k covers ``[k/per_cycle, (k+1)/per_cycle)``.

    An event is filed under the slice its time falls in, but never under one that
    is already being processed or past (``earliest``): what a slice produces is
    handled in a later slice, so a slice's events never depend on each other
    across nodes.
    """

    def __init__(self, per_cycle: int) -> None:
        self.per_cycle = per_cycle
        self._slots: dict[int, dict[str, list[Events]]] = defaultdict(lambda: defaultdict(list))

    def add(self, kind: str, events: Events, earliest: int) -> None:
        if len(events) == 0:
            return
        slots = np.maximum(np.floor(events["t"] * self.per_cycle).astype(np.int64), earliest)
        first = int(slots.min())
        if first == int(slots.max()):
            self._slots[first][kind].append(events)
            return
        for slot in np.unique(slots):
            self._slots[int(slot)][kind].append(events.take(np.flatnonzero(slots == slot)))

    def pop(self, slot: int) -> dict[str, Events]:
        kinds = self._slots.pop(slot, None)
        if not kinds:
            return {}
        return {kind: Events.concat(parts) for kind, parts in kinds.items()}


def subrounds(dst: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
    """Positions of events split so that the r-th list holds the r-th event (by ``t``) of
    each destination: each list names every node at most once."""
    m = dst.shape[0]
    if m == 0:
        return []
    order = np.lexsort((t, dst))
    d = dst[order]
    pos = np.arange(m)
    first = np.ones(m, dtype=bool)
    first[1:] = d[1:] != d[:-1]
    rank = pos - np.maximum.accumulate(np.where(first, pos, 0))
    top = int(rank.max())
    if top == 0:
        return [order]
    by_rank = np.argsort(rank, kind="stable")
    counts = np.bincount(rank, minlength=top + 1)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [order[by_rank[bounds[r]: bounds[r + 1]]] for r in range(top + 1)]


def per_cycle(width: float) -> int:
    """Slices per cycle for a slice ``width`` (which must divide one cycle)."""
    k = round(1.0 / width)
    if k < 1 or not math.isclose(k * width, 1.0, rel_tol=1e-9):
        raise ValueError(f"the slice width must divide one cycle (1/k), got {width}")
    return k

"""Static overlays for experiments: full, ring, k-regular, small-world, random.

A static overlay is fixed when the experiment starts, so its sampler never
shuffles: ``on_tick`` returns nothing, ``next_wakeup`` is ``inf`` and
``on_request`` returns None. It exists so that the effect of the topology on
learning can be measured apart from the peer-sampling protocol.

Graphs are built with numpy only, from the caller's generator, so the same
seed gives the same overlay. All non-full overlays are undirected.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from peer_sampling.messages import Address, ShuffleReply, ShuffleRequest
from peer_sampling.outcome import Outcome

__all__ = [
    "TOPOLOGIES",
    "TopologySpec",
    "parse_topology",
    "build_overlay",
    "build_edges",
    "AllOthers",
    "FullOverlay",
    "StaticSampler",
    "FullSampler",
]

TOPOLOGIES = ("full", "ring", "kregular:K", "smallworld:K,P", "random:P")

_KREGULAR_ATTEMPTS = 100


@dataclass(frozen=True, slots=True)
class TopologySpec:
    """A parsed topology string. ``k`` and ``p`` are None where the kind has none."""

    kind: str
    k: int | None = None
    p: float | None = None

    def __str__(self) -> str:
        if self.kind == "kregular":
            return f"kregular:{self.k}"
        if self.kind == "smallworld":
            return f"smallworld:{self.k},{self.p}"
        if self.kind == "random":
            return f"random:{self.p}"
        return self.kind


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"bad topology {spec!r}: {why} (expected one of: {', '.join(TOPOLOGIES)})")


def _parse_int(spec: str, text: str, what: str, low: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise _bad(spec, f"{what} must be an integer, got {text.strip()!r}") from None
    if value < low:
        raise _bad(spec, f"{what} must be >= {low}, got {value}")
    return value


def _parse_prob(spec: str, text: str, what: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise _bad(spec, f"{what} must be a number, got {text.strip()!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise _bad(spec, f"{what} must be in [0, 1], got {text.strip()}")
    return value


def parse_topology(spec: str) -> TopologySpec:
    """``full`` | ``ring`` | ``kregular:K`` | ``smallworld:K,P`` | ``random:P``.

    K is a neighbour count (>= 1; even for smallworld, whose lattice links K/2
    nodes on each side), P a probability in [0, 1]. Anything else raises a
    one-line ValueError saying what is wrong.
    """
    if not isinstance(spec, str):
        raise ValueError(f"topology must be a string, got {type(spec).__name__}")
    name, colon, arg = spec.strip().partition(":")
    name = name.strip().lower()
    if name in ("full", "ring"):
        if colon:
            raise _bad(spec, f"'{name}' takes no parameter")
        return TopologySpec(name)
    if name not in ("kregular", "smallworld", "random"):
        raise _bad(spec, f"unknown topology {name!r}")
    if not colon or not arg.strip():
        raise _bad(spec, f"'{name}' needs a parameter")
    if name == "kregular":
        return TopologySpec("kregular", k=_parse_int(spec, arg, "K", 1))
    if name == "random":
        if "," in arg:
            raise _bad(spec, "'random' takes one parameter P")
        return TopologySpec("random", p=_parse_prob(spec, arg, "P"))
    parts = arg.split(",")
    if len(parts) != 2:
        raise _bad(spec, "'smallworld' takes two parameters K,P")
    k = _parse_int(spec, parts[0], "K", 2)
    if k % 2:
        raise _bad(spec, f"K must be even for smallworld (K/2 neighbours per side), got {k}")
    return TopologySpec("smallworld", k=k, p=_parse_prob(spec, parts[1], "P"))


# -- graph construction (on node indices 0..n-1) ---------------------------------


def _lattice_edges(n: int, k: int) -> set[tuple[int, int]]:
    """Ring lattice: i linked to the k//2 next nodes on each side (k even)."""
    edges: set[tuple[int, int]] = set()
    for i in range(n):
        for j in range(1, k // 2 + 1):
            a, b = i, (i + j) % n
            if a != b:
                edges.add((min(a, b), max(a, b)))
    return edges


def _ring_edges(n: int) -> set[tuple[int, int]]:
    return _lattice_edges(n, 2)


def _smallworld_edges(n: int, k: int, p: float, rng: np.random.Generator) -> set[tuple[int, int]]:
    """Watts-Strogatz: ring lattice of degree k, then each lattice edge (i, i+j) is,
    with probability p, rewired to (i, w) for a uniform w that is neither i nor
    already a neighbour of i (the edge stays if i is linked to everybody)."""
    if k >= n:
        raise ValueError(f"smallworld needs K < number of nodes, got K={k} with {n} nodes")
    adj: list[set[int]] = [set() for _ in range(n)]
    for a, b in _lattice_edges(n, k):
        adj[a].add(b)
        adj[b].add(a)
    if p > 0:
        for j in range(1, k // 2 + 1):
            coins = rng.random(n)
            for i in range(n):
                if coins[i] >= p:
                    continue
                v = (i + j) % n
                if v not in adj[i] or len(adj[i]) >= n - 1:
                    continue
                while True:
                    w = int(rng.random() * n)
                    if w != i and w not in adj[i]:
                        break
                adj[i].discard(v)
                adj[v].discard(i)
                adj[i].add(w)
                adj[w].add(i)
    return {(a, b) for a in range(n) for b in adj[a] if a < b}


def _random_edges(n: int, p: float, rng: np.random.Generator) -> set[tuple[int, int]]:
    """Erdős–Rényi G(n, p): each of the n(n-1)/2 pairs present independently.
    One row of coin flips at a time keeps memory O(n)."""
    edges: set[tuple[int, int]] = set()
    for i in range(n - 1):
        hits = np.flatnonzero(rng.random(n - 1 - i) < p)
        edges.update((i, i + 1 + int(h)) for h in hits)
    return edges


def _kregular_edges(n: int, k: int, rng: np.random.Generator) -> set[tuple[int, int]]:
    """A uniform-ish random simple k-regular graph (Steger–Wormald pairing, as in
    networkx ``random_regular_graph``): pair random stubs, keep the pairs that
    make new simple edges, re-pair the leftovers; restart if they cannot fit."""
    if k >= n:
        raise ValueError(f"kregular needs K < number of nodes, got K={k} with {n} nodes")
    if (k * n) % 2:
        raise ValueError(f"kregular needs K * number of nodes to be even, got K={k} with {n} nodes")
    for _ in range(_KREGULAR_ATTEMPTS):
        edges = _try_kregular(n, k, rng)
        if edges is not None:
            return edges
    raise ValueError(f"could not build a simple {k}-regular graph on {n} nodes")


def _try_kregular(n: int, k: int, rng: np.random.Generator) -> set[tuple[int, int]] | None:
    edges: set[tuple[int, int]] = set()
    stubs = np.repeat(np.arange(n), k)
    while stubs.size:
        rng.shuffle(stubs)
        leftover: list[int] = []
        pairs = stubs.reshape(-1, 2).tolist()
        for a, b in pairs:
            if a > b:
                a, b = b, a
            if a != b and (a, b) not in edges:
                edges.add((a, b))
            else:
                leftover.append(a)
                leftover.append(b)
        if not leftover:
            return edges
        if not _can_pair(set(leftover), edges):
            return None
        stubs = np.array(leftover, dtype=np.int64)
    return edges


def _can_pair(nodes: set[int], edges: set[tuple[int, int]]) -> bool:
    """Is there any pair among ``nodes`` not already an edge? (else: dead end)"""
    ordered = sorted(nodes)
    for x, a in enumerate(ordered):
        for b in ordered[x + 1 :]:
            if (a, b) not in edges:
                return True
    return False


def build_edges(spec: TopologySpec, n: int, rng: np.random.Generator) -> set[tuple[int, int]]:
    """Undirected edges ``(i, j)`` with ``i < j`` over node indices ``0..n-1``."""
    if spec.kind == "ring":
        return _ring_edges(n)
    if spec.kind == "kregular":
        assert spec.k is not None
        return _kregular_edges(n, spec.k, rng)
    if spec.kind == "smallworld":
        assert spec.k is not None and spec.p is not None
        return _smallworld_edges(n, spec.k, spec.p, rng)
    if spec.kind == "random":
        assert spec.p is not None
        return _random_edges(n, spec.p, rng)
    if spec.kind == "full":
        return {(i, j) for i in range(n) for j in range(i + 1, n)}
    raise ValueError(f"unknown topology kind {spec.kind!r}")


# -- the full overlay without n² lists ---------------------------------------------


class AllOthers(Sequence[Address]):
    """Every address but one, as a read-only sequence (O(1) memory per node:
    all nodes share the same address tuple and index)."""

    __slots__ = ("_addresses", "_index", "_skip")

    def __init__(self, addresses: tuple[Address, ...], index: Mapping[Address, int], skip: int) -> None:
        self._addresses = addresses
        self._index = index
        self._skip = skip

    def __len__(self) -> int:
        return len(self._addresses) - 1 if 0 <= self._skip < len(self._addresses) else len(self._addresses)

    @overload
    def __getitem__(self, i: int) -> Address: ...
    @overload
    def __getitem__(self, i: slice) -> list[Address]: ...
    def __getitem__(self, i: int | slice) -> Address | list[Address]:
        if isinstance(i, slice):
            return [self[x] for x in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        if 0 <= self._skip <= i:
            i += 1
        return self._addresses[i]

    def __contains__(self, address: object) -> bool:
        j = self._index.get(address)  # type: ignore[call-overload]
        return j is not None and j != self._skip

    def __iter__(self) -> Iterator[Address]:
        for j, a in enumerate(self._addresses):
            if j != self._skip:
                yield a


class FullOverlay(Mapping[Address, Sequence[Address]]):
    """The complete graph as a mapping address -> :class:`AllOthers`."""

    def __init__(self, addresses: Sequence[Address]) -> None:
        self._addresses = tuple(addresses)
        self._index = {a: i for i, a in enumerate(self._addresses)}

    def __getitem__(self, address: Address) -> AllOthers:
        return AllOthers(self._addresses, self._index, self._index[address])

    def __iter__(self) -> Iterator[Address]:
        return iter(self._addresses)

    def __len__(self) -> int:
        return len(self._addresses)


def build_overlay(
    spec: TopologySpec | str,
    addresses: Sequence[Address],
    rng: np.random.Generator,
) -> Mapping[Address, Sequence[Address]]:
    """Adjacency ``address -> neighbours`` for ``addresses`` (distinct).

    For ``full`` this is a lazy :class:`FullOverlay` (no n² lists); otherwise a
    plain ``dict`` of sorted-by-index ``list`` s. Node i of the graph is
    ``addresses[i]``, so ring and lattice neighbours follow the given order.
    """
    if isinstance(spec, str):
        spec = parse_topology(spec)
    addrs = list(addresses)
    if len(set(addrs)) != len(addrs):
        raise ValueError("build_overlay: addresses must be distinct")
    if spec.kind == "full":
        return FullOverlay(addrs)
    n = len(addrs)
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in sorted(build_edges(spec, n, rng)):
        adj[a].append(b)
        adj[b].append(a)
    return {addrs[i]: [addrs[j] for j in sorted(adj[i])] for i in range(n)}


# -- samplers ------------------------------------------------------------------------


class StaticSampler:
    """A :class:`PeerSampler` over a fixed neighbour list.

    It never shuffles. ``on_outcome`` deliberately does nothing: a static
    overlay is part of the experiment's definition, and a peer that is down now
    may come back; dropping it would silently change the topology under study.
    ``add_seed`` (an explicit admin join) does add a neighbour.
    """

    def __init__(self, self_address: Address, neighbours: Sequence[Address], rng: np.random.Generator) -> None:
        self.self_address: Address = self_address
        self.rng: np.random.Generator = rng
        if isinstance(neighbours, AllOthers):
            self._neighbours: Sequence[Address] = neighbours
        else:
            seen: set[Address] = set()
            clean: list[Address] = []
            for a in neighbours:
                if a != self_address and a not in seen:
                    seen.add(a)
                    clean.append(a)
            self._neighbours = clean
        self._added: list[Address] = []

    def select_peer(self) -> Address | None:
        base = len(self._neighbours)
        n = base + len(self._added)
        if n == 0:
            return None
        i = int(self.rng.random() * n)
        return self._neighbours[i] if i < base else self._added[i - base]

    def peers(self) -> list[Address]:
        return [*self._neighbours, *self._added]

    def next_wakeup(self) -> float:
        return math.inf

    def on_tick(self, now: float) -> list[tuple[Address, ShuffleRequest]]:
        return []

    def on_request(self, now: float, request: ShuffleRequest) -> ShuffleReply | None:
        return None

    def on_reply(self, now: float, reply: ShuffleReply) -> None:
        return None

    def on_outcome(self, now: float, address: Address, outcome: Outcome) -> None:
        """Nothing, whatever the outcome: static overlays are fixed by design (see class docstring)."""
        return None

    def add_seed(self, address: Address) -> None:
        if address == self.self_address or address in self._neighbours or address in self._added:
            return
        self._added.append(address)

    def introduce(self, now: float, address: Address) -> list[tuple[Address, ShuffleRequest]]:
        """An admin join adds a neighbour; a static overlay has no shuffle to start."""
        self.add_seed(address)
        return []

    def state_dict(self) -> dict[str, Any]:
        """Only what is not derived from the topology: peers added by ``add_seed``."""
        return {"added": list(self._added)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        added = state.get("added", []) if isinstance(state, Mapping) else None
        if not isinstance(added, list) or not all(isinstance(a, str) and a for a in added):
            raise ValueError("StaticSampler state must be {'added': [address, ...]}")
        self._added = []
        for a in added:
            self.add_seed(a)


class FullSampler(StaticSampler):
    """Picks uniformly among all other nodes without an n-long list per node.

    Pass a shared :class:`FullOverlay` (from ``build_overlay("full", ...)``) when
    building many nodes, so they all share one address tuple; a plain sequence
    of addresses also works but costs O(n) for this node alone.
    """

    def __init__(
        self,
        self_address: Address,
        addresses: FullOverlay | Sequence[Address],
        rng: np.random.Generator,
    ) -> None:
        if isinstance(addresses, FullOverlay):
            overlay = addresses
        else:
            addrs = list(addresses)
            overlay = FullOverlay(addrs if self_address in addrs else [*addrs, self_address])
        super().__init__(self_address, overlay[self_address], rng)

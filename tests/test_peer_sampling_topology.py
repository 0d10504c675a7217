"""Static overlays: parsing, graph shapes, and the do-nothing sampler interface."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from peer_sampling import (
    FullOverlay,
    FullSampler,
    Outcome,
    PeerSampler,
    ShuffleReply,
    ShuffleRequest,
    StaticSampler,
    TopologySpec,
    build_overlay,
    parse_topology,
)

ADDRS = [f"n{i}" for i in range(60)]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def check_simple_undirected(adj: dict[str, list[str]]) -> None:
    for a, nbrs in adj.items():
        assert a not in nbrs, "self-loop"
        assert len(set(nbrs)) == len(nbrs), "multi-edge"
        for b in nbrs:
            assert a in adj[b], "not symmetric"


# -- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("full", TopologySpec("full")),
        (" Ring ", TopologySpec("ring")),
        ("kregular:4", TopologySpec("kregular", k=4)),
        ("smallworld:6,0.1", TopologySpec("smallworld", k=6, p=0.1)),
        ("smallworld: 4 , 1", TopologySpec("smallworld", k=4, p=1.0)),
        ("random:0.05", TopologySpec("random", p=0.05)),
        ("random:0", TopologySpec("random", p=0.0)),
    ],
)
def test_parse_valid(spec: str, expected: TopologySpec) -> None:
    got = parse_topology(spec)
    assert got == expected
    assert parse_topology(str(got)) == got


@pytest.mark.parametrize(
    "spec",
    [
        "", "star", "full:3", "ring:2", "kregular", "kregular:", "kregular:x", "kregular:0",
        "kregular:-2", "kregular:2.5", "smallworld", "smallworld:4", "smallworld:4,0.1,3",
        "smallworld:3,0.1", "smallworld:0,0.1", "smallworld:4,x", "smallworld:4,1.5",
        "smallworld:4,-0.1", "random", "random:", "random:abc", "random:1.1", "random:nan",
        "random:0.1,2",
    ],
)
def test_parse_rejects_bad_specs_with_one_line(spec: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_topology(spec)
    msg = str(err.value)
    assert "\n" not in msg and "topology" in msg


def test_parse_rejects_non_string() -> None:
    with pytest.raises(ValueError):
        parse_topology(3)  # type: ignore[arg-type]


# -- graphs ---------------------------------------------------------------------------


def test_ring_degrees_and_neighbours() -> None:
    adj = build_overlay("ring", ADDRS, rng())
    check_simple_undirected(adj)  # type: ignore[arg-type]
    n = len(ADDRS)
    for i, a in enumerate(ADDRS):
        assert sorted(adj[a]) == sorted([ADDRS[(i - 1) % n], ADDRS[(i + 1) % n]])
    assert build_overlay("ring", ["a", "b"], rng()) == {"a": ["b"], "b": ["a"]}
    assert build_overlay("ring", ["a"], rng()) == {"a": []}


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 20])
def test_kregular_degrees(k: int) -> None:
    n = 60 if k != 7 else 40
    adj = build_overlay(f"kregular:{k}", ADDRS[:n], rng(k))
    check_simple_undirected(adj)  # type: ignore[arg-type]
    assert {len(v) for v in adj.values()} == {k}


def test_kregular_is_random_and_deterministic() -> None:
    a = build_overlay("kregular:4", ADDRS, rng(1))
    assert a == build_overlay("kregular:4", ADDRS, rng(1))
    assert a != build_overlay("kregular:4", ADDRS, rng(2))


@pytest.mark.parametrize(
    "spec, n, match",
    [("kregular:3", 5, "even"), ("kregular:5", 5, "K < number"), ("smallworld:6,0.1", 6, "K < number")],
)
def test_impossible_graphs_raise(spec: str, n: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_overlay(spec, ADDRS[:n], rng())


def lattice(addrs: list[str], k: int) -> dict[str, list[str]]:
    n = len(addrs)
    return {
        a: sorted({addrs[(i + d) % n] for j in range(1, k // 2 + 1) for d in (j, -j)})
        for i, a in enumerate(addrs)
    }


def test_smallworld_p0_is_the_ring_lattice() -> None:
    adj = build_overlay("smallworld:6,0", ADDRS, rng(5))
    assert {a: sorted(v) for a, v in adj.items()} == lattice(ADDRS, 6)
    ring = build_overlay("ring", ADDRS, rng())
    sw2 = build_overlay("smallworld:2,0", ADDRS, rng())
    assert {a: sorted(v) for a, v in sw2.items()} == {a: sorted(v) for a, v in ring.items()}


@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
def test_smallworld_rewiring_keeps_edge_count_and_simplicity(p: float) -> None:
    adj = build_overlay(f"smallworld:4,{p}", ADDRS, rng(3))
    check_simple_undirected(adj)  # type: ignore[arg-type]
    assert sum(len(v) for v in adj.values()) == 4 * len(ADDRS)
    changed = sum(set(adj[a]) != set(b) for a, b in lattice(ADDRS, 4).items())
    assert changed > 0
    assert adj == build_overlay(f"smallworld:4,{p}", ADDRS, rng(3))


def test_random_graph_density() -> None:
    addrs = [f"x{i}" for i in range(300)]
    adj = build_overlay("random:0.1", addrs, rng(9))
    check_simple_undirected(adj)  # type: ignore[arg-type]
    mean_deg = sum(len(v) for v in adj.values()) / len(addrs)
    assert abs(mean_deg - 0.1 * 299) < 2.0
    assert all(len(v) == 0 for v in build_overlay("random:0", ADDRS, rng()).values())
    full = build_overlay("random:1", ADDRS, rng())
    assert all(len(v) == len(ADDRS) - 1 for v in full.values())


def test_duplicate_addresses_rejected() -> None:
    with pytest.raises(ValueError, match="distinct"):
        build_overlay("ring", ["a", "b", "a"], rng())


# -- full overlay and samplers -----------------------------------------------------------


def test_full_overlay_is_lazy_and_excludes_self() -> None:
    overlay = build_overlay("full", ADDRS, rng())
    assert isinstance(overlay, FullOverlay) and len(overlay) == len(ADDRS)
    others = overlay["n5"]
    assert len(others) == len(ADDRS) - 1
    assert list(others) == [a for a in ADDRS if a != "n5"]
    assert [others[i] for i in range(len(others))] == list(others)
    assert others[-1] == "n59" and others[4] == "n4" and others[5] == "n6"
    assert others[3:6] == ["n3", "n4", "n6"]
    assert "n5" not in others and "n6" in others and "zz" not in others
    with pytest.raises(IndexError):
        others[59]


def test_full_sampler_uniform_never_self() -> None:
    overlay = build_overlay("full", ADDRS[:10], rng())
    s = FullSampler("n3", overlay, rng(4))  # type: ignore[arg-type]
    counts = Counter(s.select_peer() for _ in range(9000))
    assert "n3" not in counts and len(counts) == 9
    assert min(counts.values()) > 850 and max(counts.values()) < 1150
    alone = FullSampler("solo", ["solo"], rng())
    assert alone.select_peer() is None and alone.peers() == []
    assert FullSampler("a", ["b", "c"], rng()).peers() == ["b", "c"]


def test_static_sampler_interface() -> None:
    s = StaticSampler("me", ["a", "b", "me", "a"], rng(1))
    assert isinstance(s, PeerSampler)
    assert s.peers() == ["a", "b"]
    assert s.next_wakeup() == math.inf
    assert s.on_tick(123.0) == []
    assert s.on_request(0.0, ShuffleRequest("x", ())) is None
    s.on_reply(0.0, ShuffleReply("x", ()))
    for outcome in Outcome:
        s.on_outcome(0.0, "a", outcome)  # static by design: nothing is removed
    assert s.peers() == ["a", "b"]
    s.add_seed("c")
    s.add_seed("a")
    s.add_seed("me")
    assert s.peers() == ["a", "b", "c"]
    assert {s.select_peer() for _ in range(200)} == {"a", "b", "c"}
    assert StaticSampler("me", [], rng()).select_peer() is None
    state = s.state_dict()
    t = StaticSampler("me", ["a", "b"], rng())
    t.load_state_dict(state)
    assert t.peers() == ["a", "b", "c"]
    with pytest.raises(ValueError):
        t.load_state_dict({"added": [3]})


def test_samplers_from_an_overlay_are_deterministic() -> None:
    def picks(seed: int) -> list[str | None]:
        adj = build_overlay("smallworld:4,0.2", ADDRS, rng(seed))
        s = StaticSampler("n0", adj["n0"], rng(seed + 1))
        return [s.select_peer() for _ in range(20)]

    assert picks(1) == picks(1)


def test_introduce_on_a_static_sampler_adds_a_neighbour_and_sends_nothing() -> None:
    s = StaticSampler("me", ["a"], np.random.default_rng(0))
    assert s.introduce(0.0, "b") == []
    assert sorted(s.peers()) == ["a", "b"]

"""Cyclon: protocol steps, invariants under random shuffles, convergence and healing.

``Net`` is a tiny deterministic in-test driver: a dict address -> Cyclon, a heap of
wake-up times, requests and replies delivered at once, optional loss and dead nodes.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer_sampling import (
    Cyclon,
    CyclonConfig,
    Outcome,
    PeerDescriptor,
    PeerSampler,
    ShuffleReply,
    ShuffleRequest,
)

ROUND = CyclonConfig(interval=1.0)


class Net:
    def __init__(
        self,
        n: int,
        n_seeds: int,
        seed: int,
        config: CyclonConfig = ROUND,
        drop: float = 0.0,
        notify_failures: bool = False,
    ) -> None:
        ss = np.random.SeedSequence(seed)
        children = ss.spawn(n + 1)
        self.rng = np.random.default_rng(children[-1])  # the network's own coin
        self.addrs = [f"n{i}" for i in range(n)]
        self.seeds = self.addrs[:n_seeds]
        self.nodes = {
            a: Cyclon(a, self.seeds, config, np.random.default_rng(c))
            for a, c in zip(self.addrs, children)
        }
        self.dead: set[str] = set()
        self.drop = drop
        self.notify_failures = notify_failures
        self.sent: list[tuple[str, str]] = []
        self.heap = [(c.next_wakeup(), i, a) for i, (a, c) in enumerate(self.nodes.items())]
        heapq.heapify(self.heap)

    def lost(self) -> bool:
        return self.drop > 0 and self.rng.random() < self.drop

    def run_until(self, t: float) -> None:
        while self.heap and self.heap[0][0] <= t:
            now, i, a = heapq.heappop(self.heap)
            if a in self.dead:
                continue  # a dead node never wakes again
            node = self.nodes[a]
            for dest, req in node.on_tick(now):
                assert isinstance(req, ShuffleRequest) and req.sender == a
                self.sent.append((a, dest))
                if dest in self.dead or self.lost():
                    if self.notify_failures:
                        node.on_outcome(now, dest, Outcome.UNREACHABLE if dest in self.dead else Outcome.TIMEOUT)
                    continue
                reply = self.nodes[dest].on_request(now, req)
                assert reply is not None and reply.sender == dest
                if not self.lost():
                    node.on_reply(now, reply)
                elif self.notify_failures:  # a lost reply: a timeout at the requester only
                    node.on_outcome(now, dest, Outcome.TIMEOUT)
            heapq.heappush(self.heap, (node.next_wakeup(), i, a))

    def alive(self) -> dict[str, Cyclon]:
        return {a: c for a, c in self.nodes.items() if a not in self.dead}

    def check_invariants(self) -> None:
        for a, c in self.nodes.items():
            peers = c.peers()
            assert a not in peers
            assert len(set(peers)) == len(peers) <= c.config.view_size
            assert all(d.age >= 0 for d in c.view)


def undirected_connected(net: Net) -> bool:
    alive = net.alive()
    adj: dict[str, set[str]] = {a: set() for a in alive}
    for a, c in alive.items():
        for p in c.peers():
            if p in adj:
                adj[a].add(p)
                adj[p].add(a)
    start = next(iter(adj))
    seen = {start}
    todo = deque([start])
    while todo:
        for b in adj[todo.popleft()]:
            if b not in seen:
                seen.add(b)
                todo.append(b)
    return len(seen) == len(adj)


def dead_links(net: Net) -> int:
    return sum(p in net.dead for c in net.alive().values() for p in c.peers())


def make(address: str = "me", seeds: tuple[str, ...] = ("s",), **cfg: object) -> Cyclon:
    """One node, exact periods; no reseeding unless asked (it would interleave extra shuffles)."""
    config = CyclonConfig(**{"interval": 1.0, "jitter": 0.0, "reseed_interval": math.inf, **cfg})  # type: ignore[arg-type]
    return Cyclon(address, list(seeds), config, np.random.default_rng(0))


def fill(c: Cyclon, entries: list[tuple[str, int]]) -> None:
    for a, g in entries:
        assert c.view.add(PeerDescriptor(a, g))


# -- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("view_size", 0),
        ("view_size", 2.5),
        ("view_size", True),
        ("shuffle_length", 0),
        ("shuffle_length", 21),  # > view_size
        ("interval", 0.0),
        ("interval", -1.0),
        ("interval", math.inf),
        ("interval", math.nan),
        ("jitter", -0.1),
        ("jitter", 1.0),
        ("reseed_interval", 0.0),
        ("reseed_interval", math.nan),
        ("max_timeouts", 0),
        ("unvouched_age_step", 0),
        ("pending_timeout", 0.0),
        ("pending_timeout", math.inf),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        CyclonConfig(**{field: value})  # type: ignore[arg-type]


def test_config_defaults() -> None:
    c = CyclonConfig()
    assert (c.view_size, c.shuffle_length, c.interval, c.jitter) == (20, 8, 10.0, 0.1)
    assert c.effective_pending_timeout == c.interval
    assert c.effective_reseed_interval == 5 * c.interval  # partitions heal with the defaults
    assert CyclonConfig(interval=2.0).effective_reseed_interval == 10.0
    assert CyclonConfig(reseed_interval=math.inf).effective_reseed_interval == math.inf
    assert CyclonConfig(pending_timeout=3.0).effective_pending_timeout == 3.0
    assert (c.max_timeouts, c.unvouched_age_step, c.max_from_one) == (2, 2, 8)
    assert CyclonConfig(view_size=4, shuffle_length=4).max_from_one == 3  # never the whole view


# -- single-node protocol steps ------------------------------------------------------


def test_is_a_peer_sampler_and_starts_empty() -> None:
    c = make(seeds=("s", "me", "s"))
    assert isinstance(c, PeerSampler)
    assert c.seeds == ["s"]  # self and duplicates ignored
    assert c.peers() == [] and c.select_peer() is None
    assert 0.0 <= c.next_wakeup() <= 1.0


def test_first_shuffle_is_desynchronised() -> None:
    wakeups = [
        Cyclon("me", ["s"], ROUND, np.random.default_rng(i), now=5.0).next_wakeup() for i in range(50)
    ]
    assert all(5.0 <= w <= 6.0 for w in wakeups) and len(set(wakeups)) == 50


def test_empty_view_contacts_a_seed_with_its_self_descriptor() -> None:
    c = make(seeds=("s1", "s2"))
    assert c.on_tick(c.next_wakeup() - 1e-9) == []
    t = c.next_wakeup()
    [(dest, req)] = c.on_tick(t)
    assert dest in ("s1", "s2")
    other = "s2" if dest == "s1" else "s1"
    # self first, then the other seeds, so that seeds get to know each other
    assert req == ShuffleRequest("me", (PeerDescriptor("me", 0), PeerDescriptor(other, 0)))
    assert c.next_wakeup() == pytest.approx(t + 1.0)  # jitter 0: exact period
    c.on_reply(t, ShuffleReply(dest, (PeerDescriptor("x", 3), PeerDescriptor("me", 0))))
    assert c.peers() == ["x", dest]  # the seed answered, so it is alive: kept while there is room


def test_a_partner_that_answers_is_kept_only_if_there_is_room() -> None:
    c = make(view_size=2, shuffle_length=2)
    fill(c, [("a", 5), ("b", 1)])
    [(dest, req)] = c.on_tick(c.next_wakeup())
    assert dest == "a" and c.peers() == ["b"]
    c.on_reply(1.0, ShuffleReply("a", (PeerDescriptor("y", 0),)))
    assert sorted(c.peers()) == ["b", "y"]  # full again: the partner is not forced in
    c2 = make(view_size=3, shuffle_length=2)
    fill(c2, [("a", 5)])
    c2.on_tick(c2.next_wakeup())
    c2.on_reply(1.0, ShuffleReply("a", ()))
    assert c2.peers() == ["a"]  # two-node network: the link does not flip away


def test_no_seeds_and_empty_view_sends_nothing() -> None:
    c = make(seeds=())
    assert c.on_tick(c.next_wakeup()) == []
    assert math.isfinite(c.next_wakeup())


def test_shuffle_ages_removes_oldest_and_sends_sample() -> None:
    c = make(view_size=5, shuffle_length=3)
    fill(c, [("a", 1), ("b", 7), ("c", 2), ("d", 7), ("e", 0)])
    [(dest, req)] = c.on_tick(c.next_wakeup())
    assert dest == "b"  # oldest, first on the tie with d
    assert "b" not in c.view and len(c.view) == 4
    assert req.entries[0] == PeerDescriptor("me", 0)
    rest = req.entries[1:]
    assert len(rest) == 2 and len({d.address for d in rest}) == 2
    for d in rest:
        assert d.address != "b" and c.view.age_of(d.address) == d.age
    assert c.view.age_of("a") == 3  # nobody here ever answered us: unvouched entries age by 2


def test_entries_that_answered_us_age_slower_and_are_contacted_later() -> None:
    c = make(view_size=3, shuffle_length=2, seeds=())
    fill(c, [("liar", 0), ("real", 0), ("other", 0)])
    c.on_outcome(0.0, "real", Outcome.DELIVERED)  # real answered a push of ours
    c.on_outcome(0.0, "other", Outcome.BUSY)  # busy is alive too
    c.view.increase_ages(1, extra=c.config.unvouched_age_step - 1, spared=c.vouched)
    assert (c.view.age_of("liar"), c.view.age_of("real"), c.view.age_of("other")) == (2, 1, 1)
    [(dest, _)] = c.on_tick(c.next_wakeup())
    assert dest == "liar"  # the oldest: contacted (and dropped if it is not there) first

def test_reply_fills_free_slots_then_replaces_sent_entries() -> None:
    c = make(view_size=4, shuffle_length=3)
    fill(c, [("a", 9), ("b", 1), ("c", 1), ("d", 1)])
    [(dest, req)] = c.on_tick(c.next_wakeup())
    assert dest == "a"
    sent = [d.address for d in req.entries[1:]]
    kept = ({"b", "c", "d"} - set(sent)).pop()
    reply = ShuffleReply("a", (PeerDescriptor("x", 0), PeerDescriptor("me", 4), PeerDescriptor(kept, 0),
                               PeerDescriptor("y", 0), PeerDescriptor("z", 0), PeerDescriptor("w", 0)))
    c.on_reply(c.next_wakeup(), reply)
    # x takes the free slot of a; self and the known entry are skipped; y and z
    # overwrite the two sent entries; w finds no room.
    assert set(c.peers()) == {"x", kept, "y", "z"}
    assert c.view.age_of(kept) == 3  # the known entry keeps its own age (1, +2 unvouched)


def test_receiver_answers_without_requester_and_takes_its_entries() -> None:
    c = make(view_size=3, shuffle_length=2)
    fill(c, [("req", 5), ("a", 1), ("b", 2)])
    request = ShuffleRequest("new", (PeerDescriptor("new", 0), PeerDescriptor("me", 3), PeerDescriptor("q", 1)))
    c.view.remove("req")
    c.view.add(PeerDescriptor("c", 4))
    reply = c.on_request(0.0, request)
    assert reply is not None and reply.sender == "me"
    sent = [d.address for d in reply.entries]
    assert len(sent) == 2 and "new" not in sent
    assert "new" in c.view and "q" in c.view and "me" not in c.view
    assert set(c.peers()) == {"new", "q"} | ({"a", "b", "c"} - set(sent))

    # the requester is never sent back to itself even when it is in our view
    c2 = make(view_size=3, shuffle_length=3)
    fill(c2, [("r", 0), ("a", 0)])
    rep2 = c2.on_request(0.0, ShuffleRequest("r", (PeerDescriptor("r", 0),)))
    assert rep2 is not None and [d.address for d in rep2.entries] == ["a"]


def test_receiver_with_empty_view_adds_newcomer() -> None:
    seed = make(address="s", seeds=())
    reply = seed.on_request(0.0, ShuffleRequest("me", (PeerDescriptor("me", 0),)))
    assert reply == ShuffleReply("s", ())
    assert seed.peers() == ["me"]


@pytest.mark.parametrize("outcome", [Outcome.UNREACHABLE, Outcome.REFUSED])
def test_fatal_outcome_removes_and_forgets_pending(outcome: Outcome) -> None:
    c = make(view_size=3, shuffle_length=2)
    fill(c, [("a", 5), ("b", 1), ("c", 1)])
    [(dest, _)] = c.on_tick(c.next_wakeup())
    assert dest == "a"
    c.on_outcome(0.0, "a", outcome)
    c.on_outcome(0.0, "b", outcome)
    assert c.peers() == ["c"]
    # a reply from a after the failure only fills free slots
    c.on_reply(0.0, ShuffleReply("a", (PeerDescriptor("x", 0), PeerDescriptor("y", 0), PeerDescriptor("z", 0))))
    assert set(c.peers()) == {"c", "x", "y"}


@pytest.mark.parametrize("strike", [Outcome.TIMEOUT, Outcome.REPLY_LOST])
def test_timeouts_cost_a_peer_only_when_repeated_and_busy_never(strike: Outcome) -> None:
    c = make(view_size=3, shuffle_length=2, seeds=("s",))
    fill(c, [("a", 0), ("b", 0), ("s", 0)])
    c.known.update({"a": None, "b": None})
    for _ in range(10):
        c.on_outcome(0.0, "b", Outcome.BUSY)
    c.on_outcome(0.0, "a", strike)
    assert "a" in c.peers() and "a" in c.known  # one lost packet does not cost a peer
    c.on_outcome(0.0, "a", Outcome.DELIVERED)  # an answer clears the strikes
    c.on_outcome(0.0, "a", strike)
    assert "a" in c.peers()
    c.on_outcome(0.0, "a", strike)  # max_timeouts = 2 in a row
    assert "a" not in c.peers() and "a" not in c.known
    assert "b" in c.peers()
    c.on_outcome(0.0, "s", strike)
    c.on_outcome(0.0, "s", strike)
    assert "s" not in c.peers() and c.seeds == ["s"]  # a seed leaves the view, never the seed list


# -- eclipse resistance --------------------------------------------------------------


def test_a_forged_request_fills_at_most_l_entries_of_a_full_view() -> None:
    c = make(view_size=20, shuffle_length=8)
    fill(c, [(f"h{i}", 1) for i in range(20)])
    forged = ShuffleRequest("evil", tuple(PeerDescriptor(f"evil{i}", 0) for i in range(64)))
    c.on_request(0.0, forged)
    evil = [a for a in c.peers() if a.startswith("evil")]
    assert len(evil) == 8 and len(c.peers()) == 20  # ℓ of them; 12 honest entries stay
    assert sum(a.startswith("evil") for a in c.known) <= 8  # nor does it flood the fallback book


def test_a_forged_reply_never_fills_an_empty_view() -> None:
    c = make(view_size=4, shuffle_length=4, seeds=("evil",))
    [(dest, _)] = c.on_tick(c.next_wakeup())  # empty view: bootstrap through the seed
    assert dest == "evil"
    c.on_reply(1.0, ShuffleReply("evil", tuple(PeerDescriptor(f"evil{i}", 0) for i in range(64))))
    # max_from_one = 3 (ℓ = c = 4, never the whole view), the partner itself included
    assert len(c.peers()) == 3
    c.on_reply(2.0, ShuffleReply("s2", (PeerDescriptor("h", 0),)))
    assert "h" in c.peers() and len(c.peers()) == 4  # the last slot stays for someone else


def test_late_reply_after_pending_timeout_only_fills() -> None:
    c = make(view_size=3, shuffle_length=3, pending_timeout=0.5)
    fill(c, [("a", 5), ("b", 1), ("c", 1)])
    t = c.next_wakeup()
    [(dest, _)] = c.on_tick(t)
    c.on_tick(c.next_wakeup())  # one period later: the shuffle with a is forgotten
    before = set(c.peers())
    c.on_reply(t + 1.0, ShuffleReply(dest, (PeerDescriptor("x", 0), PeerDescriptor("y", 0), PeerDescriptor("z", 0))))
    after = set(c.peers())
    assert before <= after and len(after) == 3


def test_add_seed_goes_into_view_if_room() -> None:
    c = make(view_size=1, shuffle_length=1, seeds=())
    c.add_seed("me")
    assert c.seeds == [] and c.peers() == []
    c.add_seed("s1")
    c.add_seed("s1")
    c.add_seed("s2")
    assert c.seeds == ["s1", "s2"] and c.peers() == ["s1"]
    c.view.remove("s1")
    c.add_seed("s2")  # a known seed joined again goes into the view
    assert c.seeds == ["s1", "s2"] and c.peers() == ["s2"]


def test_node_with_empty_view_recontacts_its_seed() -> None:
    c = make(view_size=4, shuffle_length=2, seeds=("s",))
    fill(c, [("a", 0), ("b", 0)])
    targets = []
    for _ in range(4):  # a and b never answer: they drop out, then the seed is asked
        out = c.on_tick(c.next_wakeup())
        targets += [d for d, _ in out]
    assert targets == ["a", "b", "s", "s"] or targets == ["b", "a", "s", "s"]
    assert c.peers() == []


def test_reseed_contacts_a_seed_or_remembered_address_outside_the_view() -> None:
    c = make(view_size=4, shuffle_length=2, seeds=("s",), reseed_interval=3.0)
    fill(c, [(f"p{i}", 0) for i in range(4)])
    reseeds: list[str] = []
    t = 0.0
    while t < 60.0:
        t = c.next_wakeup()
        out = c.on_tick(t)
        in_view = set(c.peers())
        for k, (dest, req) in enumerate(out):
            assert req.entries[0] == PeerDescriptor("me", 0)
            is_reseed = k == 1 or dest == "s" or dest.startswith("old")
            if is_reseed:
                reseeds.append(dest)
                assert dest not in in_view
                c.on_outcome(t, dest, Outcome.TIMEOUT)  # the far side of a cut: nothing comes back
            else:
                c.on_reply(t, ShuffleReply(dest, (PeerDescriptor(f"x{t}", 0),)))
        c.known.update({f"old{int(t)}": None})  # the book also holds addresses long gone from the view
    assert 18 <= len(reseeds) <= 22  # every 3 periods
    assert 0.3 < reseeds.count("s") / len(reseeds) < 0.7  # half of them to a seed
    assert any(d.startswith("old") for d in reseeds)
    assert c.seeds == ["s"]  # timeouts never cost a seed its place
    assert make(view_size=4, shuffle_length=2).next_wakeup() <= 1.0  # inf reseed does not hide the shuffle timer


def test_jitter_keeps_periods_in_bounds() -> None:
    c = Cyclon("me", ["s"], CyclonConfig(interval=2.0, jitter=0.25, reseed_interval=math.inf), np.random.default_rng(3))
    t = c.next_wakeup()
    periods = []
    for _ in range(200):
        c.on_tick(t)
        nxt = c.next_wakeup()
        periods.append(nxt - t)
        t = nxt
    assert min(periods) >= 1.5 and max(periods) <= 2.5
    assert np.std(periods) > 0.1
    # a late driver gets one shuffle, not a burst; the next period counts from now
    c.view.add(PeerDescriptor("a", 0))
    c.view.add(PeerDescriptor("b", 0))
    assert len(c.on_tick(t + 100.0)) == 1
    assert c.next_wakeup() >= t + 101.5


def test_state_dict_round_trip_and_validation() -> None:
    c = make(view_size=3, shuffle_length=2, seeds=("s1", "s2"))
    fill(c, [("a", 2), ("b", 0)])
    state = c.state_dict()
    c.on_outcome(0.0, "gone", Outcome.UNREACHABLE)
    state = c.state_dict()
    assert state == {"view": [["a", 2], ["b", 0]], "seeds": ["s1", "s2"], "known": [], "failed": ["gone"]}
    d = make(view_size=3, shuffle_length=2, seeds=())
    d.load_state_dict(state)
    assert d.state_dict() == state
    for bad in [{}, {"view": [], "seeds": [1]}, {"view": [["a", -1]], "seeds": []}, None,
                {"view": [], "seeds": [], "failed": [3]}]:
        with pytest.raises(ValueError):
            d.load_state_dict(bad)  # type: ignore[arg-type]
    assert d.state_dict() == state  # a failed load changes nothing


def test_empty_view_falls_back_to_remembered_addresses_when_seeds_are_dead() -> None:
    """A node whose neighbours and seeds all crashed tries addresses it saw earlier."""
    c = make(view_size=1, shuffle_length=1, seeds=("dead-seed",))
    for address in ("a", "b", "c"):
        c.on_reply(0.0, ShuffleReply("x", (PeerDescriptor(address, 0),)))
    assert c.peers() == ["a"] and set(c.known) == {"a", "b", "c"}
    c.on_outcome(0.0, "a", Outcome.UNREACHABLE)
    assert c.peers() == [] and "a" not in c.known
    targets = []
    for t in range(1, 40):
        for dest, _ in c.on_tick(float(t)):
            targets.append(dest)
            if dest == "dead-seed":
                c.on_outcome(float(t), dest, Outcome.UNREACHABLE)
    assert {"b", "c"} & set(targets), targets
    assert "dead-seed" in c.seeds  # seeds are never forgotten: they may come back


def test_failed_addresses_are_the_last_resort_and_are_never_forgotten() -> None:
    """A node with no seeds whose every neighbour is down (a restart while they were
    down) keeps asking them, and takes back the first one that answers."""
    c = make(view_size=3, shuffle_length=2, seeds=())
    fill(c, [("a", 0), ("b", 0)])
    c.on_reply(0.0, ShuffleReply("b", (PeerDescriptor("c", 0),)))  # c: only seen, never failed
    for dead in ("a", "b", "c"):
        c.on_outcome(0.0, dead, Outcome.UNREACHABLE)
    assert c.peers() == [] and not c.known and set(c.failed) == {"a", "b", "c"}
    asked = []
    for t in range(1, 30):
        for dest, _ in c.on_tick(float(t)):
            asked.append(dest)
            c.on_outcome(float(t), dest, Outcome.UNREACHABLE)  # still down
    assert set(asked) == {"a", "b", "c"}
    # b comes back: its answer puts it in the view and out of the failed book.
    target, request = c.on_tick(100.0)[0]
    c.on_reply(100.0, ShuffleReply(target, ()))
    assert c.peers() == [target] and target not in c.failed
    # Live candidates first: a remembered address that never failed is asked before failed ones.
    d = make(view_size=3, shuffle_length=2, seeds=())
    d.on_outcome(0.0, "down", Outcome.UNREACHABLE)
    d.on_reply(0.0, ShuffleReply("x", (PeerDescriptor("up", 0),)))
    d.on_outcome(0.0, "x", Outcome.UNREACHABLE)
    assert [dest for t in range(1, 20) for dest, _ in d.on_tick(float(t))] and \
        all(dest == "up" for t in range(20, 40) for dest, _ in d.on_tick(float(t)))


def test_a_failed_address_that_answers_busy_is_asked_again() -> None:
    """A restarted node whose only address comes back 'starting' (503: busy) keeps it as a
    way back: the busy answer takes it out of the failed book, so it must land in the
    fallback book, or the node would know nobody for good."""
    c = make(view_size=3, shuffle_length=2, seeds=())
    fill(c, [("b", 0)])
    c.on_outcome(0.0, "b", Outcome.UNREACHABLE)
    assert c.peers() == [] and list(c.failed) == ["b"]
    (dest, _), = c.on_tick(1.0)
    c.on_outcome(1.0, dest, Outcome.BUSY)  # b is back, still loading its model
    assert "b" not in c.failed and "b" in c.known
    asked = [dest for t in range(2, 10) for dest, _ in c.on_tick(float(t))]
    assert asked and set(asked) == {"b"}


def test_remembered_addresses_are_bounded() -> None:
    c = make(view_size=2, shuffle_length=2, fallback_size=5)
    for i in range(20):
        c.on_reply(0.0, ShuffleReply("x", (PeerDescriptor(f"p{i}", 0),)))
    assert len(c.known) == 5 and list(c.known) == [f"p{i}" for i in range(15, 20)]


# -- many nodes --------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 25),
    n_seeds=st.integers(1, 3),
    view_size=st.integers(1, 6),
    drop=st.sampled_from([0.0, 0.1, 0.5]),
    notify=st.booleans(),
)
def test_invariants_under_random_shuffles(
    seed: int, n: int, n_seeds: int, view_size: int, drop: float, notify: bool
) -> None:
    cfg = CyclonConfig(view_size=view_size, shuffle_length=max(1, view_size // 2), interval=1.0)
    net = Net(n, min(n_seeds, n), seed, cfg, drop=drop, notify_failures=notify)
    for r in range(1, 16):
        net.run_until(float(r))
        net.check_invariants()
        if r == 8 and n > 3:
            net.dead.add(net.addrs[-1])


@pytest.fixture(scope="module")
def converged() -> Net:
    net = Net(200, 3, seed=2024)
    net.run_until(50.0)
    return net


def test_bootstrap_from_three_seeds_converges(converged: Net) -> None:
    net = converged
    net.check_invariants()
    sizes = [len(c.view) for c in net.nodes.values()]
    assert min(sizes) == 20
    assert undirected_connected(net)
    indeg = dict.fromkeys(net.addrs, 0)
    for c in net.nodes.values():
        for p in c.peers():
            indeg[p] += 1
    d = np.array(list(indeg.values()), dtype=float)
    assert d.mean() == 20.0
    assert d.std() / d.mean() <= 0.3
    assert d.min() > 0  # nobody is forgotten, the seeds are not hubs
    assert max(indeg[s] for s in net.seeds) < 40


@pytest.mark.parametrize("notify", [False, True])
def test_dead_nodes_disappear_from_views(notify: bool) -> None:
    net = Net(200, 3, seed=7, notify_failures=notify)
    net.run_until(40.0)
    net.notify_failures = notify
    net.dead.update(net.addrs[150:])  # a quarter of the nodes crash, seeds survive
    assert dead_links(net) > 500
    for r in range(41, 101):
        net.run_until(float(r))
        if dead_links(net) == 0:
            break
    assert dead_links(net) == 0, f"dead links left after {r - 40} rounds"
    assert r - 40 <= 50
    assert undirected_connected(net)
    net.run_until(float(r + 10))
    assert min(len(c.view) for c in net.alive().values()) >= 19


def test_same_seed_same_run_different_seed_different_run() -> None:
    def run(seed: int) -> list[dict]:
        net = Net(40, 2, seed, drop=0.1)
        net.run_until(15.0)
        return [c.state_dict() for c in net.nodes.values()] + [{"sent": net.sent}]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_seeds_learn_each_other_from_newcomers() -> None:
    """Seeds configured without each other would otherwise each grow a separate island."""
    newcomer = make(address="me", seeds=("s0", "s1"), view_size=4, shuffle_length=2)
    [(dest, req)] = newcomer.on_tick(newcomer.next_wakeup())
    other = "s1" if dest == "s0" else "s0"
    assert [d.address for d in req.entries] == ["me", other]
    seed = make(address=dest, seeds=(), view_size=4, shuffle_length=2)
    fill(seed, [("x1", 0), ("x2", 0), ("x3", 0), ("x4", 0)])  # already full of newcomers
    reply = seed.on_request(0.0, req)
    assert reply is not None and len(reply.entries) == 2
    assert {"me", other} <= set(seed.peers()) and len(seed.view) == 4
    newcomer.on_reply(0.0, reply)
    # what the seed sent, plus the seed itself (it answered, and there is room)
    assert set(newcomer.peers()) == {d.address for d in reply.entries} | {dest}


def test_introduce_shuffles_with_the_new_seed_at_once() -> None:
    c = make(view_size=4, shuffle_length=3, seeds=())
    fill(c, [("a", 1), ("b", 2)])
    out = c.introduce(5.0, "new")
    assert [dest for dest, _ in out] == ["new"]
    req = out[0][1]
    assert req.entries[0] == PeerDescriptor("me", 0) and "new" not in [d.address for d in req.entries]
    assert "new" in c.seeds and "new" in c.peers()
    assert c.introduce(5.0, "me") == []

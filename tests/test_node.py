"""The sans-IO node core, paired in memory: no simulator, no network, no clock.

Tests drive ``on_tick`` / ``on_model`` / shuffles by hand with explicit ``now``
values and deliver the returned sends themselves.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gossipd.core.learner import Learner, LearnerConfig, LocalData, make_learner
from gossipd.core.spec import Schema
from gossipd.core.merge import parse_merge
from gossipd.core.messages import ModelMessage, Outcome, Send, ShuffleReply, ShuffleRequest
from gossipd.core.node import Discard, GossipConfig, GossipNode, RejectedMessage
from gossipd.core.state import ModelState
from peer_sampling.cyclon import Cyclon, CyclonConfig
from peer_sampling.topology import StaticSampler

INTERVAL = 5.0
JITTER = 0.1


def make_node(address, sampler, learner, data, *, seed, merge="age", state=None, jitter=JITTER,
              **knobs) -> GossipNode:
    return GossipNode(
        address=address,
        learner=learner,
        data=data,
        sampler=sampler,
        config=GossipConfig(interval=INTERVAL, jitter=jitter, merge=merge, **knobs),
        rng=np.random.default_rng(seed),
        state=state,
    )


def static_pair(learner, make_local_data, merge="age"):
    a = make_node("a", StaticSampler("a", ["b"], np.random.default_rng(10)), learner,
                  make_local_data(10, 4, 3, seed=1), seed=1, merge=merge)
    b = make_node("b", StaticSampler("b", ["a"], np.random.default_rng(20)), learner,
                  make_local_data(10, 4, 3, seed=2), seed=2, merge=merge)
    return a, b


def trained_state(learner: Learner, seed: int, age: float) -> ModelState:
    rng = np.random.default_rng(seed)
    return ModelState(rng.standard_normal(learner.n_params).astype(np.float32), age)


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kwargs", [dict(interval=0), dict(interval=-1), dict(interval=float("inf")), dict(jitter=1.0),
               dict(jitter=-0.1), dict(merge="foo"), dict(merge="limited:-1"), dict(merge="robust:1"),
               dict(max_age_lead_passes=-1.0), dict(max_age_lead_passes=float("inf")), dict(clip_scale=0.0),
               dict(clip_scale=float("nan")), dict(clip_window=0), dict(max_param_abs=0.0),
               dict(max_param_abs=float("inf"))],
)
def test_gossip_config_rejects(kwargs):
    with pytest.raises(ValueError):
        GossipConfig(**kwargs)


def test_node_rejects_state_of_wrong_size(small_learner, small_data):
    with pytest.raises(ValueError):
        make_node("a", StaticSampler("a", ["b"], np.random.default_rng(0)), small_learner, small_data, seed=0,
                  state=ModelState(np.zeros(small_learner.n_params + 2, np.float32)))


def test_node_starts_from_the_learner_initial_state(small_learner, small_data):
    node = make_node("a", StaticSampler("a", ["b"], np.random.default_rng(0)), small_learner, small_data, seed=0)
    assert np.array_equal(node.state.params, small_learner.initial_state().params)
    assert node.state.age == 0.0


# ------------------------------------------------------------------ timers and pushes


def test_first_push_falls_within_the_first_period(small_learner, small_data):
    wakeups = [
        make_node("a", StaticSampler("a", ["b"], np.random.default_rng(0)), small_learner, small_data,
                  seed=s).next_wakeup()
        for s in range(20)
    ]
    assert all(0.0 <= w < INTERVAL for w in wakeups)
    assert len(set(wakeups)) == len(wakeups)  # nodes started together do not push together


def test_on_tick_before_wakeup_sends_nothing_after_pushes_to_neighbour(small_learner, make_local_data):
    a, _ = static_pair(small_learner, make_local_data)
    t = a.next_wakeup()
    assert a.on_tick(t - 1e-6) == []
    assert a.on_tick(0.0) == []
    assert a.counters.sent == 0
    assert a.next_wakeup() == t  # an early tick does not move the timer

    sends = a.on_tick(t)
    assert len(sends) == 1
    (send,) = sends
    assert isinstance(send, Send) and send.peer == "b"
    msg = send.message
    assert isinstance(msg, ModelMessage)
    assert msg.sender == "a"
    assert msg.arch == small_learner.fingerprint
    assert msg.age == a.state.age
    assert np.array_equal(msg.params, a.state.params)
    assert a.counters.sent == 1

    nxt = a.next_wakeup()
    assert t + INTERVAL * (1 - JITTER) <= nxt <= t + INTERVAL * (1 + JITTER)
    assert a.on_tick(nxt - 1e-6) == []
    assert len(a.on_tick(nxt)) == 1
    assert a.counters.sent == 2


def test_late_tick_sends_one_push_not_a_burst(small_learner, make_local_data):
    a, _ = static_pair(small_learner, make_local_data)
    late = a.next_wakeup() + 10 * INTERVAL
    assert len(a.on_tick(late)) == 1
    assert a.next_wakeup() > late


def test_no_jitter_gives_exact_periods(small_learner, small_data):
    node = make_node("a", StaticSampler("a", ["b"], np.random.default_rng(0)), small_learner, small_data,
                     seed=0, jitter=0.0)
    t = node.next_wakeup()
    node.on_tick(t)
    assert node.next_wakeup() == pytest.approx(t + INTERVAL)


def test_node_without_neighbours_sends_nothing_but_keeps_its_timer(small_learner, small_data):
    node = make_node("a", StaticSampler("a", [], np.random.default_rng(0)), small_learner, small_data, seed=0)
    t = node.next_wakeup()
    assert node.on_tick(t) == []
    assert node.counters.sent == 0
    assert node.next_wakeup() > t


def test_pushes_pick_among_neighbours(small_learner, small_data):
    node = make_node("a", StaticSampler("a", ["b", "c", "d"], np.random.default_rng(3)), small_learner,
                     small_data, seed=0)
    peers = []
    for _ in range(60):
        (send,) = node.on_tick(node.next_wakeup())
        peers.append(send.peer)
    assert set(peers) == {"b", "c", "d"}
    assert min(peers.count(p) for p in "bcd") >= 10


# ------------------------------------------------------------------ receiving models


def test_robust_merge_is_the_default():
    assert GossipConfig().merge == "robust"


@pytest.mark.parametrize("merge", ["robust", "age", "average", "overwrite", "limited:5", "limited:1000"])
def test_on_model_merges_then_updates(small_learner, make_local_data, merge):
    a, b = static_pair(small_learner, make_local_data, merge=merge)
    a.state = trained_state(small_learner, seed=5, age=100.0)
    b.state = trained_state(small_learner, seed=6, age=30.0)
    local_before = b.state
    (send,) = a.on_tick(a.next_wakeup())

    new = b.on_model(a.next_wakeup(), send.message)

    merged = parse_merge(merge)(local_before, ModelState(send.message.params, send.message.age))
    # 10 examples, batch 32: one full-batch step, so the training rng plays no part.
    expected = small_learner.update(merged, b.data, np.random.default_rng(0))
    assert np.array_equal(new.params, expected.params)
    assert new.age == max(100.0, 30.0) + len(b.data) == 110.0
    assert b.state is new
    assert b.counters.received == 1 and b.counters.merged == 1 and b.counters.rejected == 0
    # the sender's model is untouched by the receiver's training
    assert a.state.age == 100.0


def test_received_models_spread_and_ages_grow(small_learner, make_local_data):
    a, b = static_pair(small_learner, make_local_data)
    now = 0.0
    for _ in range(10):
        for sender, receiver in ((a, b), (b, a)):
            now = max(now, sender.next_wakeup())
            for send in sender.on_tick(now):
                assert send.peer == receiver.address
                receiver.on_model(now, send.message)
    assert a.counters.merged == 10 and b.counters.merged == 10
    assert a.counters.sent == 10 and b.counters.sent == 10
    # each merge takes the larger age and adds 10 local examples
    assert a.state.age >= 100 and b.state.age >= 100
    assert not np.array_equal(a.state.params, small_learner.initial_state().params)


def test_wrong_fingerprint_is_rejected_and_state_untouched(small_learner, make_local_data):
    _, b = static_pair(small_learner, make_local_data)
    b.state = trained_state(small_learner, seed=7, age=42.0)
    before_state = b.state
    before_params = b.state.params.copy()
    other = make_learner("mlp:4", Schema.classification(4, 3))
    bad = ModelMessage("x", other.fingerprint, 500.0, np.ones(small_learner.n_params, np.float32))

    with pytest.raises(RejectedMessage) as exc:
        b.on_model(1.0, bad)
    assert other.fingerprint in str(exc.value) and small_learner.fingerprint in str(exc.value)
    assert b.counters.rejected == 1
    assert b.counters.received == 0 and b.counters.merged == 0
    assert b.state is before_state
    assert b.state.age == 42.0
    assert np.array_equal(b.state.params, before_params)
    assert b.state.params.tobytes() == before_params.tobytes()  # bit-identical


def test_right_fingerprint_wrong_size_is_rejected(small_learner, make_local_data):
    _, b = static_pair(small_learner, make_local_data)
    before = b.state
    bad = ModelMessage("x", small_learner.fingerprint, 5.0, np.ones(small_learner.n_params - 1, np.float32))
    with pytest.raises(RejectedMessage):
        b.on_model(1.0, bad)
    assert b.counters.rejected == 1
    assert b.state is before


def test_rejected_message_is_a_value_error():
    assert issubclass(RejectedMessage, ValueError)


# ------------------------------------------------------------------ failures and Cyclon


def cyclon_node(address, others, learner, data, seed, view_size=5, shuffle_length=3):
    """A node whose Cyclon view starts with ``others`` (learned by admin join)."""
    cfg = CyclonConfig(view_size=view_size, shuffle_length=shuffle_length, interval=INTERVAL, jitter=JITTER)
    sampler = Cyclon(address, [], cfg, np.random.default_rng(seed + 1000))
    for peer in others:
        sampler.add_seed(peer)
    return make_node(address, sampler, learner, data, seed=seed)


def test_send_failed_counts_and_removes_peer_from_cyclon_view(small_learner, small_data):
    node = cyclon_node("a", ["b", "c", "d"], small_learner, small_data, seed=0)
    assert set(node.sampler.peers()) == {"b", "c", "d"}
    node.on_outcome(1.0, "c", Outcome.UNREACHABLE)
    assert node.counters.send_failures == 1
    assert set(node.sampler.peers()) == {"b", "d"}
    # pushes never go to the failed peer again
    peers = set()
    for _ in range(30):
        for send in node.on_tick(node.next_wakeup()):
            if isinstance(send.message, ModelMessage):
                peers.add(send.peer)
    assert "c" not in peers


def test_send_failed_keeps_static_neighbours(small_learner, small_data):
    node = make_node("a", StaticSampler("a", ["b", "c"], np.random.default_rng(0)), small_learner, small_data, seed=0)
    node.on_outcome(1.0, "b", Outcome.UNREACHABLE)
    assert node.counters.send_failures == 1
    assert node.sampler.peers() == ["b", "c"]


def test_cyclon_node_tick_returns_push_and_shuffle(small_learner, small_data):
    node = cyclon_node("a", ["b", "c", "d"], small_learner, small_data, seed=0)
    t = max(node.next_gossip, node.sampler.next_wakeup())
    assert node.next_wakeup() == min(node.next_gossip, node.sampler.next_wakeup())
    sends = node.on_tick(t)
    kinds = sorted(type(s.message).__name__ for s in sends)
    assert kinds == ["ModelMessage", "ShuffleRequest"]
    shuffle = next(s for s in sends if isinstance(s.message, ShuffleRequest))
    assert shuffle.message.sender == "a"
    assert shuffle.message.entries[0].address == "a"  # fresh self-descriptor first
    assert shuffle.peer not in node.sampler.peers()  # Cyclon drops the partner it contacts


def run_cluster(seed: int, until: float = 60.0, n: int = 3):
    """Three Cyclon nodes, messages delivered instantly, in ``now`` order. Returns (log, nodes)."""
    learner = make_learner("logreg", Schema.classification(4, 3), LearnerConfig(batch_size=4))
    rng = np.random.default_rng(seed)
    addresses = [f"n{i}" for i in range(n)]
    nodes = {}
    for i, addr in enumerate(addresses):
        X = rng.standard_normal((12, 4)).astype(np.float32)
        y = rng.integers(0, 3, 12)
        cfg = CyclonConfig(view_size=4, shuffle_length=2, interval=INTERVAL, jitter=JITTER)
        sampler = Cyclon(addr, [addresses[0]] if i else [addresses[1]], cfg, np.random.default_rng(rng.integers(2**63)))
        nodes[addr] = GossipNode(addr, learner, LocalData.from_numpy(X, y, 3), sampler,
                                 GossipConfig(interval=INTERVAL, jitter=JITTER), np.random.default_rng(rng.integers(2**63)))
    log = []
    while True:
        addr = min(nodes, key=lambda a: (nodes[a].next_wakeup(), a))
        now = nodes[addr].next_wakeup()
        if now > until:
            break
        for send in nodes[addr].on_tick(now):
            msg = send.message
            log.append((now, addr, send.peer, type(msg).__name__))
            target = nodes[send.peer]
            if isinstance(msg, ModelMessage):
                target.on_model(now, msg)
            elif isinstance(msg, ShuffleRequest):
                reply = target.on_shuffle_request(now, msg)
                if reply is not None:
                    assert isinstance(reply, ShuffleReply)
                    log.append((now, send.peer, addr, "ShuffleReply"))
                    nodes[addr].on_shuffle_reply(now, reply)
    return log, nodes


def test_three_cyclon_nodes_bootstrap_and_learn():
    log, nodes = run_cluster(seed=1)
    for addr, node in nodes.items():
        peers = node.sampler.peers()
        assert addr not in peers and len(set(peers)) == len(peers)
        assert set(peers) <= set(nodes) - {addr}
        assert node.counters.merged > 0
        assert node.counters.rejected == 0
        assert node.state.age > 0
    # Bootstrapped from one seed each (views start empty), the overlay ends up connected.
    edges = {frozenset((a, p)) for a, node in nodes.items() for p in node.sampler.peers()}
    assert len(edges) >= 2 and set().union(*edges) == set(nodes)
    # every node's model reached somebody, and every node got models
    assert {src for _, src, _, k in log if k == "ModelMessage"} == set(nodes)
    assert {dst for _, _, dst, k in log if k == "ModelMessage"} == set(nodes)
    kinds = {k for *_, k in log}
    assert kinds == {"ModelMessage", "ShuffleRequest", "ShuffleReply"}
    assert sum(n.counters.sent for n in nodes.values()) == sum(1 for *_, k in log if k == "ModelMessage")


def test_same_seeds_same_run_other_seed_other_run():
    log1, nodes1 = run_cluster(seed=4)
    log2, nodes2 = run_cluster(seed=4)
    log3, nodes3 = run_cluster(seed=5)
    assert log1 == log2
    for addr in nodes1:
        assert nodes1[addr].state.params.tobytes() == nodes2[addr].state.params.tobytes()
        assert nodes1[addr].state.age == nodes2[addr].state.age
        assert nodes1[addr].counters == nodes2[addr].counters
    assert log1 != log3
    assert any(nodes1[a].state.params.tobytes() != nodes3[a].state.params.tobytes() for a in nodes1)


def test_core_does_not_touch_global_randomness(small_learner, make_local_data):
    """Reseeding or draining the global generators does not change what a node does."""
    import random

    def run(global_seed: int):
        np.random.seed(global_seed)
        random.seed(global_seed)
        a, b = static_pair(small_learner, make_local_data)
        out = []
        for _ in range(5):
            (send,) = a.on_tick(a.next_wakeup())
            out.append((a.next_wakeup(), b.on_model(0.0, send.message).params.tobytes()))
        return out

    assert run(0) == run(12345)


def test_node_modules_do_not_import_aiohttp():
    code = "import gossipd.core.node, gossipd.core.merge, peer_sampling, sys; assert 'aiohttp' not in sys.modules, 'aiohttp imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_join_introduces_the_peer_through_cyclon() -> None:
    from gossipd.core.learner import LocalData
    from gossipd.core.node import GossipConfig, GossipNode
    from gossipd.core.messages import ShuffleRequest
    from peer_sampling import Cyclon, CyclonConfig

    learner = make_learner("logreg", Schema.classification(3, 2))
    rng = np.random.default_rng(4)
    data = LocalData.from_numpy(rng.normal(size=(6, 3)).astype(np.float32), np.array([0, 1] * 3), 2)
    node = GossipNode("me", learner, data, Cyclon("me", [], CyclonConfig(interval=1.0), np.random.default_rng(1)),
                      GossipConfig(interval=1.0), np.random.default_rng(2))
    sends = node.join(0.0, "peer")
    assert len(sends) == 1 and sends[0].peer == "peer" and isinstance(sends[0].message, ShuffleRequest)
    assert node.sampler.peers() == ["peer"]


# ------------------------------------------------------------------ numeric safety

F32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("merge", ["robust", "age", "average", "overwrite", "limited:100"])
def test_overflow_sequence_leaves_a_finite_model(small_learner, make_local_data, merge):
    """Issue 10: a fresh node sent two valid messages with every parameter = float32 max,
    then an honest one. Before, it ended with every parameter inf, then NaN for good."""
    node = make_node("me", StaticSampler("me", ["x"], np.random.default_rng(0)), small_learner,
                     make_local_data(10, 4, 3, seed=1), seed=1, merge=merge)
    fresh = node.state
    assert fresh.age == 0.0
    huge = np.full(small_learner.n_params, F32_MAX, np.float32)  # finite: passes every wire check
    for i in range(2):
        kept = node.on_model(float(i), ModelMessage("evil", small_learner.fingerprint, 50.0, huge))
        assert kept is fresh and node.state is fresh  # the previous model, untouched
    assert node.counters.discarded == 2 and node.counters.merged == 0 and node.counters.received == 2
    notes = node.take_discards()
    assert [(d.stage, d.reason, d.sender) for d in notes] == [("merge", "too_large", "evil")] * 2
    assert "discarded" in str(notes[0]) and "evil" in str(notes[0])
    assert node.take_discards() == []  # each reported once

    honest = trained_state(small_learner, seed=3, age=20.0)
    after = node.on_model(3.0, ModelMessage("good", small_learner.fingerprint, honest.age, honest.params))
    assert np.isfinite(after.params).all() and np.abs(after.params).max() < 100
    assert after is not fresh and after.age > 0
    assert node.counters.merged == 1 and node.counters.discarded == 2


def test_a_training_step_out_of_bounds_is_discarded(small_learner, make_local_data):
    node = make_node("me", StaticSampler("me", ["x"], np.random.default_rng(0)), small_learner,
                     make_local_data(10, 4, 3, seed=1), seed=1, max_param_abs=0.52)
    before = node.state
    # Within the bound after the merge (every parameter 0.5), past it after one SGD step
    # (full batch, so deterministic: the largest parameter becomes 0.57).
    near = np.full(small_learner.n_params, 0.5, np.float32)
    node.on_model(1.0, ModelMessage("x", small_learner.fingerprint, 10.0, near))
    assert node.state is before
    [note] = node.take_discards()
    assert (note.stage, note.reason) == ("update", "too_large")


def test_a_diverged_training_step_is_discarded(small_learner):
    """The learner hands its input back when its step goes non-finite; the node then keeps
    the model it had before the merge, not the merged one that made training blow up."""
    rng = np.random.default_rng(0)
    wild = LocalData.from_numpy((rng.standard_normal((10, 4)) * 1e38).astype(np.float32), rng.integers(0, 3, 10), 3)
    node = make_node("me", StaticSampler("me", ["x"], np.random.default_rng(0)), small_learner, wild, seed=1)
    before = node.state
    remote = trained_state(small_learner, seed=4, age=10.0)
    node.on_model(1.0, ModelMessage("x", small_learner.fingerprint, remote.age, remote.params))
    assert node.state is before and node.counters.discarded == 1
    assert [d.reason for d in node.take_discards()] == ["diverged"]


def test_discard_notes_are_bounded_but_all_counted(small_learner, small_data):
    node = make_node("me", StaticSampler("me", ["x"], np.random.default_rng(0)), small_learner, small_data, seed=1)
    bad = np.full(small_learner.n_params, np.float32(1e30))
    for i in range(100):
        node.on_model(float(i), ModelMessage("x", small_learner.fingerprint, 1.0, bad))
    assert node.counters.discarded == 100
    assert len(node.take_discards()) == 32
    assert isinstance(Discard("merge", "non_finite", "x", 1.0), Discard)


def test_a_non_finite_remote_is_discarded_not_merged(small_learner, small_data):
    """The wire refuses NaN; the core does not rely on it (the simulator has no wire)."""
    node = make_node("me", StaticSampler("me", ["x"], np.random.default_rng(0)), small_learner, small_data,
                     seed=1, merge="robust")
    before = node.state
    nan = np.full(small_learner.n_params, np.nan, np.float32)
    node.on_model(1.0, ModelMessage("x", small_learner.fingerprint, 1.0, nan))
    assert node.state is before
    assert [d.reason for d in node.take_discards()] == ["non_finite"]


def test_a_node_cannot_start_from_a_non_finite_model(small_learner, small_data):
    bad = ModelState(np.full(small_learner.n_params, np.inf, np.float32), 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        make_node("me", StaticSampler("me", [], np.random.default_rng(0)), small_learner, small_data, seed=1,
                  state=bad)


# ------------------------------------------------------------------ outcomes


def test_outcomes_are_counted_and_only_failures_cost_a_peer(small_learner, small_data):
    node = cyclon_node("a", ["b", "c", "d", "e"], small_learner, small_data, seed=0)
    for _ in range(5):
        node.on_outcome(1.0, "b", Outcome.BUSY)
        node.on_outcome(1.0, "c", Outcome.DELIVERED)
    node.on_outcome(1.0, "d", Outcome.TIMEOUT)
    assert set(node.sampler.peers()) == {"b", "c", "d", "e"}
    node.on_outcome(2.0, "d", Outcome.REPLY_LOST)  # the second strike in a row
    node.on_outcome(2.0, "e", Outcome.REFUSED)
    assert set(node.sampler.peers()) == {"b", "c"}
    c = node.counters
    assert (c.busy, c.send_failures, c.timeouts) == (5, 3, 2)


def test_outcomes_mean_one_thing_each():
    assert {o for o in Outcome if o.alive} == {Outcome.DELIVERED, Outcome.BUSY}
    assert {o for o in Outcome if o.fatal} == {Outcome.REFUSED, Outcome.UNREACHABLE}
    assert {o for o in Outcome if o.strike} == {Outcome.TIMEOUT, Outcome.REPLY_LOST}
    for o in Outcome:  # every outcome is exactly one of: alive, fatal, a strike
        assert o.alive + o.fatal + o.strike == 1
        assert o.failed == (not o.alive)


# ------------------------------------------------------------------ model and statistics: one value


def _network_scaled_node(make_local_data):
    from gossipd.core.scaling import Scaling

    learner = make_learner("logreg", Schema.classification(4, 3), LearnerConfig(lr=0.5, init_seed=0),
                           scaling=Scaling.network())
    return make_node("a", StaticSampler("a", ["b"], np.random.default_rng(10)), learner,
                     make_local_data(10, 4, 3, seed=1), seed=1)


def test_push_never_pairs_a_model_with_another_models_statistics(make_local_data):
    """The trainer thread replaces the node's model while the loop pushes: whatever the
    interleaving, a push carries one model with its own statistics. The model below is
    replaced between any two reads of it (the worst interleaving, made deterministic)."""
    node = _network_scaled_node(make_local_data)
    old = node.model
    other_data = make_local_data(30, 4, 3, seed=9)
    new = type(old)(trained_state(node.learner, seed=3, age=50.0), node.learner.initial_stats(other_data))

    class Racing(type(node)):  # type: ignore[misc]
        reads = 0

        @property
        def model(self):
            Racing.reads += 1
            return old if Racing.reads == 1 else new

        @model.setter
        def model(self, value):  # the constructor's assignment
            pass

    node.__class__ = Racing
    msg = node.push().message
    assert msg.params is old.state.params and msg.stats is old.stats


def test_model_and_statistics_are_replaced_together(make_local_data):
    node = _network_scaled_node(make_local_data)
    before = node.model
    peer = _network_scaled_node(make_local_data)
    peer.model = type(before)(trained_state(peer.learner, seed=4, age=20.0),
                              peer.learner.initial_stats(make_local_data(40, 4, 3, seed=8)))
    after = node.on_model(0.0, peer.push().message)
    assert node.model.state is after and node.state is after
    merged = node.stats  # merged with the peer's (its claimed count capped at ours: RobustStatsMerge)
    assert merged is node.model.stats and not merged.equals(before.stats)
    node.state = before.state  # replaces the pair, keeping the statistics
    assert node.model.state is before.state and node.model.stats is merged

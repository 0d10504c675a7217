"""The batched engine's parts against the reference code they batch.

Pure functions first (the shared merge and statistics maths, the local pass
over padded data), then the vectorised Cyclon against ``peer_sampling.cyclon``
on the same states, then the events' sub-rounds. The engine as a whole is in
``tests/test_batched_engine.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gossipd.sim.batched as batched_module
from gossipd.core.learner import LearnerConfig, LocalData, make_learner
from gossipd.core.merge import age_weighted, merge_age, robust_step, window_quantile
from gossipd.core.node import GossipConfig
from gossipd.core.scaling import FeatureStats, Scaling, merge_moments
from gossipd.core.spec import Schema
from gossipd.core.state import ModelState
from gossipd.sim.batched import BatchedSimulation
from gossipd.sim.batched_cyclon import CODE, BatchedCyclon, RingBook, StaticPeers
from gossipd.sim.batched_events import Calendar, Events, subrounds
from gossipd.sim.batched_models import NodeModels, Snapshot
from gossipd.sim.config import SimulationConfig
from peer_sampling.cyclon import Cyclon, CyclonConfig
from peer_sampling.messages import PeerDescriptor, ShuffleReply, ShuffleRequest
from peer_sampling.outcome import Outcome
from peer_sampling.topology import build_overlay

# ------------------------------------------------------------------ shared maths


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=16))
def test_window_quantile_is_numpys_bit_for_bit(values):
    ordered = np.sort(np.array(values))
    assert window_quantile(ordered, len(values)) == np.quantile(values, 0.25)


def test_window_quantile_row_wise_with_unfilled_slots():
    rng = np.random.default_rng(0)
    counts = np.array([1, 3, 16, 7])
    rows = np.where(np.arange(16) < counts[:, None], rng.random((4, 16)), np.nan)
    got = window_quantile(np.sort(rows, axis=1), counts)
    assert got.tolist() == [np.quantile(r[:c], 0.25) for r, c in zip(rows, counts)]


def test_robust_step_arrays_equal_the_scalar_path():
    rng = np.random.default_rng(1)
    a_l, a_r = rng.uniform(0, 500, 50), rng.uniform(0, 1e4, 50)
    a_l[:3] = a_r[:3] = 0.0
    dist, tau = rng.uniform(0, 3, 50), rng.uniform(0.5, 2, 50)
    tau[5] = math.inf
    w, c, age = robust_step(a_l, a_r, dist, tau, 270.0)
    for i in range(50):
        assert (w[i], c[i], age[i]) == pytest.approx(robust_step(float(a_l[i]), float(a_r[i]), float(dist[i]),
                                                                 float(tau[i]), 270.0), rel=1e-12)


def test_age_weighted_rows_equal_merge_age():
    rng = np.random.default_rng(2)
    local, remote = rng.standard_normal((4, 30)).astype(np.float32), rng.standard_normal((4, 30)).astype(np.float32)
    a_l, a_r = np.array([0.0, 10.0, 5.0, 100.0]), np.array([3.0, 0.0, 5.0, 7.0])
    rows = age_weighted(local, remote, a_l, a_r)
    for i in range(4):
        one = merge_age(ModelState(local[i], a_l[i]), ModelState(remote[i], a_r[i]))
        np.testing.assert_allclose(rows[i], one.params, rtol=1e-6)


def test_merge_moments_rows_equal_feature_stats_merge():
    rng = np.random.default_rng(3)
    counts_a, counts_b = np.array([0.0, 5.0, 13.0]), np.array([0.0, 0.0, 4.0])
    mean_a, mean_b = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    var_a, var_b = rng.uniform(0, 2, (3, 6)), rng.uniform(0, 2, (3, 6))
    count, mean, var = merge_moments(counts_a, mean_a, var_a, counts_b, mean_b, var_b)
    for i in range(3):
        one = FeatureStats(counts_a[i], mean_a[i], var_a[i]).merge(FeatureStats(counts_b[i], mean_b[i], var_b[i]))
        assert count[i] == one.count
        np.testing.assert_array_equal(mean[i], one.mean)
        np.testing.assert_array_equal(var[i], one.var)


# ------------------------------------------------------------------ the local pass over many models


def _learner(spec="logreg", scaling=None, bs=32):
    return make_learner(spec, Schema.classification(5, 3), LearnerConfig(lr=0.3, batch_size=bs),
                        scaling=scaling or Scaling.none())


def _padded(datas):
    rows = max(len(d) for d in datas)
    X = np.zeros((len(datas), rows, 5), np.float32)
    T = np.zeros((len(datas), rows, 3), np.float32)
    for i, d in enumerate(datas):
        X[i, : len(d)], T[i, : len(d)] = d.X, d.target
    return X, T, np.array([len(d) for d in datas])


@pytest.mark.parametrize("spec", ["logreg", "mlp:7"])
def test_update_many_equals_update_model_by_model(spec, make_local_data):
    """Shares of 0 to 9 examples (one batch each), padded to one array: the same steps as one by one."""
    learner = _learner(spec, Scaling.network())
    datas = [make_local_data(n, 5, 3, seed=n) for n in (0, 1, 4, 9, 9)]
    rng = np.random.default_rng(0)
    params = np.stack([learner.initial_state().params + rng.normal(0, 0.1, learner.n_params).astype(np.float32)
                       for _ in datas])
    ages = np.array([0.0, 3.0, 50.0, 7.0, 1e4])
    stats = [FeatureStats.of(d.X) if len(d) else FeatureStats.of(np.zeros((0, 5))) for d in datas]
    X, T, counts = _padded(datas)
    new, new_ages, ok = learner.update_many(params, ages, X, T, counts, rng, np.stack([s.mean for s in stats]),
                                            np.stack([s.var for s in stats]))
    assert ok.all()
    for i, d in enumerate(datas):
        one = learner.update(ModelState(params[i], ages[i]), d, rng, stats[i])
        np.testing.assert_allclose(new[i], one.params, rtol=1e-5, atol=1e-6)
        assert new_ages[i] == one.age
    np.testing.assert_array_equal(new[0], params[0])  # no data: untouched


def test_update_many_takes_every_batch_of_a_larger_share(make_local_data):
    """70 examples at batch size 32: three steps (32, 32, 6) in a random order; each
    model's age grows by its own count, and a model of 20 takes one step."""
    learner = _learner(bs=32)
    datas = [make_local_data(70, 5, 3, seed=1), make_local_data(20, 5, 3, seed=2)]
    X, T, counts = _padded(datas)
    params = np.zeros((2, learner.n_params), np.float32)
    new, ages, ok = learner.update_many(params, np.zeros(2), X, T, counts, np.random.default_rng(0))
    assert ok.all() and ages.tolist() == [70.0, 20.0]
    one = learner.update(ModelState(params[1], 0.0), datas[1], np.random.default_rng(0))
    np.testing.assert_allclose(new[1], one.params, rtol=1e-5, atol=1e-6)
    # a full pass over all 70 in batches: close to, not equal to, one full-batch step
    assert not np.allclose(new[0], learner.update(ModelState(params[0], 0.0), datas[0],
                                                  np.random.default_rng(5)).params, atol=0)


def test_update_many_hands_back_a_diverged_model_unchanged(make_local_data):
    learner = _learner()
    datas = [make_local_data(5, 5, 3, seed=1)] * 2
    X, T, counts = _padded(datas)
    params = np.zeros((2, learner.n_params), np.float32)
    params[1, 0] = np.float32(3e38)  # the step overflows
    X[1] *= 1e30
    new, ages, ok = learner.update_many(params, np.array([1.0, 2.0]), X, T, counts, np.random.default_rng(0))
    assert ok.tolist() == [True, False]
    np.testing.assert_array_equal(new[1], params[1])
    assert ages[1] == 2.0 and ages[0] == 6.0


# ------------------------------------------------------------------ merging at many nodes


def test_node_models_merge_like_gossip_nodes(digits):
    """Three nodes each receive a sequence of models: the batched merge (robust, with its window
    of distances and capped age) and the statistics merge match a RobustMerge per node."""
    learner = make_learner("logreg", digits.schema, LearnerConfig(), scaling=Scaling.network())
    parts = [np.arange(0, 13), np.arange(13, 27), np.arange(27, 40)]
    models = NodeModels(learner, digits, parts, GossipConfig(interval=1.0))
    rules = [GossipConfig().merge_rule(len(p)) for p in parts]
    rng = np.random.default_rng(4)
    states = [ModelState(models.params[i], 0.0) for i in range(3)]
    rows = np.arange(3)
    for step in range(20):
        remote = rng.normal(0, 0.05 * (1 + step % 5), (3, learner.n_params)).astype(np.float32)
        remote_age = rng.uniform(0, 400, 3)
        local, a_l = models.params[rows].copy(), models.age[rows].copy()
        merged, age = models._robust(rows, local, a_l, Snapshot(remote, remote_age))
        for i in range(3):
            one = rules[i](states[i], ModelState(remote[i], remote_age[i]))
            np.testing.assert_allclose(merged[i], one.params, rtol=1e-6, atol=1e-7)
            assert age[i] == pytest.approx(one.age)
            states[i] = one
        models.params[rows], models.age[rows] = merged, age
    assert models.filled.tolist() == [20, 20, 20]


@pytest.mark.parametrize("rule", ["robust", "age"])
def test_node_models_merge_cut_models_like_gossip_nodes(digits, rule):
    """Three nodes with models cut into 5 partitions each receive a sequence of one- and
    two-partition messages: the batched merge (robust: per-partition scales, the one window,
    capped ages; age: per partition) matches merge_parts at each node."""
    from gossipd.core.merge import merge_parts
    from gossipd.core.messages import Parts
    from gossipd.core.partition import Layout

    learner = make_learner("logreg", digits.schema, LearnerConfig(), scaling=Scaling.network())
    parts = [np.arange(0, 13), np.arange(13, 27), np.arange(27, 40)]
    gossip = GossipConfig(interval=1.0, merge=rule, partitions=5, subsample=0.2)
    models = NodeModels(learner, digits, parts, gossip)
    layout = Layout(learner.n_params, 5)
    rules = [gossip.merge_rule(len(p)) for p in parts]
    rng = np.random.default_rng(4)
    states = [ModelState(models.params[i], 0.0).with_partitions(5) for i in range(3)]
    rows = np.arange(3)
    for step in range(30):
        carried = 1 + step % 2
        index = np.sort(np.argsort(rng.random((3, 5)), axis=1)[:, :carried], axis=1)
        remote = rng.normal(0, 0.05 * (1 + step % 5), (3, learner.n_params)).astype(np.float32)
        ages = rng.uniform(0, 400, (3, carried))
        local = models.params[rows].copy()
        merged, part_ages = models._merge_parts(rows, local, Snapshot(remote, ages.mean(axis=1), parts=index,
                                                                      part_ages=ages))
        for i in range(3):
            k = tuple(int(x) for x in index[i])
            one = merge_parts(rules[i], states[i], layout.gather(remote[i], k), Parts(5, k, tuple(ages[i])), layout)
            np.testing.assert_allclose(merged[i], one.params, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(part_ages[i], one.ages, rtol=1e-12)
            states[i] = one
        models.params[rows], models.part_ages[rows] = merged, part_ages
    if rule == "robust":
        assert models.filled.tolist() == [30, 30, 30] and models.held.sum(axis=1).tolist() == [45, 45, 45]


@pytest.mark.parametrize("name", ["fp32", "int8"])
def test_a_batched_cut_push_is_what_a_node_pushes(digits, name):
    """A cut push carries ``carried`` distinct partitions; their values are what GossipNode.push
    sends under the codec (int8 blocks over the carried values, partition after partition), their
    ages the sender's, and the statistics ride only with partition 0."""
    from gossipd.core import codec
    from gossipd.core.partition import Layout

    learner = make_learner("logreg", digits.schema, LearnerConfig(), scaling=Scaling.network())
    parts = [np.arange(0, 13), np.arange(13, 40)] * 10
    models = NodeModels(learner, digits, parts, GossipConfig(codec=name, partitions=7, subsample=0.3))
    models.params[:] = np.random.default_rng(2).normal(0, 3, models.params.shape).astype(np.float32)
    models.part_ages[:] = np.random.default_rng(3).uniform(0, 50, models.part_ages.shape)
    layout = Layout(learner.n_params, 7)
    rows = np.arange(20)[::-1]
    snap = models.snapshot(rows, np.random.default_rng(5))
    assert snap.parts.shape == (20, 2) and (np.diff(snap.parts, axis=1) > 0).all()
    assert len({tuple(p) for p in snap.parts.tolist()}) > 3  # drawn per push
    for row, i in enumerate(rows):
        k = tuple(int(x) for x in snap.parts[row])
        sent = codec.roundtrip(name, layout.gather(models.params[i], k))
        assert np.array_equal(layout.gather(snap.params[row], k), sent)
        assert np.array_equal(snap.part_ages[row], models.part_ages[i, list(k)])
        assert snap.with_stats[row] == (k[0] == 0)


def test_the_batched_models_cap_counts_as_a_node_does(digits):
    """The simulator's batched statistics merge goes through the same cap: a node without
    data adopts its first claim from a node with data."""
    learner = make_learner("logreg", digits.schema, LearnerConfig(), scaling=Scaling.network())
    parts = [np.arange(0, 13), np.zeros(0, dtype=int)]
    models = NodeModels(learner, digits, parts, GossipConfig())
    counters = {k: np.zeros(2, dtype=np.int64) for k in ("received", "merged", "discarded")}
    models.deliver(np.array([1]), models.snapshot(np.array([0])), np.random.default_rng(0), counters)
    assert models.count[1] == 1.0
    np.testing.assert_array_equal(models.mean[1], models.mean[0])


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_a_batched_push_under_a_codec_is_what_a_node_pushes(digits, name):
    """The snapshot a batched node sends holds the parameters and statistics a GossipNode's push
    holds under the same codec, bit for bit: what a receiver would decode off the wire."""
    from gossipd.core import codec

    learner = make_learner("logreg", digits.schema, LearnerConfig(), scaling=Scaling.network())
    parts = [np.arange(0, 13), np.arange(13, 40)]
    models = NodeModels(learner, digits, parts, GossipConfig(codec=name))
    models.params[:] = np.random.default_rng(2).normal(0, 3, models.params.shape).astype(np.float32)
    snap = models.snapshot(np.array([1, 0]))
    for row, i in enumerate((1, 0)):
        assert np.array_equal(snap.params[row], codec.roundtrip(name, models.params[i]))
        assert not np.array_equal(snap.params[row], models.params[i])  # the codec did round something
        sent = codec.roundtrip_stats(name, FeatureStats(models.count[i], models.mean[i], models.var[i]))
        assert np.array_equal(snap.mean[row], sent.mean) and np.array_equal(snap.var[row], sent.var)
    fp32 = NodeModels(learner, digits, parts, GossipConfig()).snapshot(np.array([0]))
    assert np.array_equal(fp32.var[0], models.var[0])  # fp32: the statistics as held


def test_node_models_start_from_each_nodes_exact_statistics(digits):
    learner = make_learner("logreg", digits.schema, LearnerConfig(), scaling=Scaling.network())
    parts = [np.arange(0, 13), np.arange(13, 20), np.zeros(0, dtype=int)]
    models = NodeModels(learner, digits, parts, GossipConfig())
    for i, p in enumerate(parts):
        data = LocalData.for_schema(digits.X_train[p], digits.y_train[p], digits.schema)
        st_ = learner.initial_stats(data)
        assert models.count[i] == st_.count
        np.testing.assert_array_equal(models.mean[i], st_.mean)
        np.testing.assert_array_equal(models.var[i], st_.var)
        np.testing.assert_array_equal(models.local_data()[i].X, data.X)


# ------------------------------------------------------------------ Cyclon, vectorised


CFG = CyclonConfig(view_size=6, shuffle_length=3, interval=1.0, jitter=0.0, fallback_size=5)


def _pair(view: list[tuple[int, int]], known: list[int] = (), n: int = 40, row: int = 7, config: CyclonConfig = CFG):
    """A reference Cyclon and a BatchedCyclon row in the same state (addresses as decimal strings)."""
    rng = np.random.default_rng(0)
    ref = Cyclon(str(row), ["0", "1"], config, rng)
    batched = BatchedCyclon(n, 2, config, rng)
    for a, g in view:
        ref.view.add(PeerDescriptor(str(a), g))
    batched.view[row, : len(view)] = [a for a, _ in view]
    batched.vage[row, : len(view)] = [g for _, g in view]
    batched.vlen[row] = len(view)
    ref.known = dict.fromkeys(str(a) for a in known)
    batched.known.set_row(row, list(known))
    return ref, batched


def _same(ref: Cyclon, batched: BatchedCyclon, row: int = 7) -> None:
    assert [[int(a), g] for a, g in ref.view.to_list()] == \
        [[int(a), int(g)] for a, g in zip(batched.view[row, : batched.vlen[row]], batched.vage[row, : batched.vlen[row]])]
    assert [int(a) for a in ref.known] == batched.known.in_order(row)
    assert [int(a) for a in ref.failed] == batched.failed.in_order(row)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_integrate_places_what_cyclon_places(data):
    """Random views, sent entries and received entries: the one-pass vectorised merge leaves the
    view and the book exactly as Cyclon's loop does (received entries never repeat a sent one:
    the one case the single pass does not re-place, see batched_cyclon)."""
    addrs = data.draw(st.permutations(range(8, 40)))
    size = data.draw(st.integers(0, 6))
    view = [(a, data.draw(st.integers(0, 5))) for a in addrs[:size]]
    sent = data.draw(st.lists(st.sampled_from([a for a, _ in view] or [99]), unique=True, max_size=3))
    sent = [a for a in sent if a != 99]
    pool = [7, *addrs[:size], *addrs[size: size + 10]]  # self, entries in the view, new ones
    received = data.draw(st.lists(st.sampled_from([a for a in pool if a not in sent]), unique=True, max_size=3))
    # a book with room for the message (a full ring and a dict may evict an address the same
    # message brings again in a different order; RingBook's own test covers eviction)
    known = data.draw(st.lists(st.sampled_from(addrs[:20]), unique=True, max_size=CFG.fallback_size - 3))
    ref, batched = _pair(view, known)
    rows = np.array([7])
    ages = [data.draw(st.integers(0, 9)) for _ in received]
    budget_ref = ref._integrate([PeerDescriptor(str(a), g) for a, g in zip(received, ages)], [str(a) for a in sent])
    width, swidth = 3, 2
    entries = np.full((1, width), -1, np.int32)
    eages = np.zeros((1, width), np.int64)
    entries[0, : len(received)], eages[0, : len(received)] = received, ages
    sent_arr = np.full((1, swidth), -1, np.int32)
    sent_arr[0, : min(len(sent), swidth)] = sent[:swidth]
    if len(sent) > swidth:
        return  # the engine never sends more than ℓ-1 entries
    budget = batched._integrate(rows, entries, eages, np.array([len(received)]), sent_arr, np.array([len(sent)]))
    assert budget[0] == budget_ref
    _same(ref, batched)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_seeds_requests_one_by_one_are_cyclons_on_request(data):
    """The path for a node hearing many requests in a slice (the seeds): the same replies,
    view and books as the reference Cyclon answering the same requests in order, with the
    same generator (which starts with the two timer draws of Cyclon's constructor)."""
    addrs = data.draw(st.permutations(range(8, 40)))
    size = data.draw(st.integers(0, 6))
    view = [(a, data.draw(st.integers(0, 5))) for a in addrs[:size]]
    known = data.draw(st.lists(st.sampled_from(addrs[:20]), unique=True, max_size=CFG.fallback_size))
    failed = data.draw(st.lists(st.sampled_from(addrs[20:]), unique=True, max_size=CFG.fallback_size))
    pool = [7, *addrs[:size], *addrs[size: size + 10]]  # self, entries in the view, new ones
    requests = []
    for _ in range(data.draw(st.integers(1, 5))):
        sender = data.draw(st.sampled_from([a for a in pool if a != 7] + failed[:2]))
        others = data.draw(st.lists(st.sampled_from([a for a in pool if a != sender]), unique=True, max_size=2))
        requests.append([(sender, 0), *((a, data.draw(st.integers(0, 9))) for a in others)])
    seed = data.draw(st.integers(0, 2**32 - 1))
    ref = Cyclon("7", ["0", "1"], CFG, np.random.default_rng(seed))  # draws its two timers
    _, batched = _pair(view, known)
    for a, g in view:
        ref.view.add(PeerDescriptor(str(a), g))
    ref.known = dict.fromkeys(str(a) for a in known)
    ref.failed = dict.fromkeys(str(a) for a in failed)
    batched.failed.set_row(7, list(failed))
    k, width = len(requests), CFG.shuffle_length
    entries = np.full((k, width), -1, np.int32)
    ages = np.zeros((k, width), np.int64)
    for i, req in enumerate(requests):
        entries[i, : len(req)] = [a for a, _ in req]
        ages[i, : len(req)] = [g for _, g in req]
    senders = np.array([req[0][0] for req in requests])
    reply, reply_ages, count = batched.on_requests_one_by_one(
        7, senders, entries, ages, np.array([len(r) for r in requests]), 0.0, np.random.default_rng(seed))
    for i, req in enumerate(requests):
        answer = ref.on_request(0.0, ShuffleRequest(str(req[0][0]), tuple(PeerDescriptor(str(a), g) for a, g in req)))
        assert [(int(d.address), d.age) for d in answer.entries] == \
            list(zip(reply[i, : count[i]].tolist(), reply_ages[i, : count[i]].tolist()))
    _same(ref, batched)


def test_outcomes_act_as_cyclons_do():
    """The same sequence of outcomes on both: vouching, strikes (max_timeouts in a row),
    drops from the view and the book into ``failed`` (never a seed). Books large enough not to
    come round: a ring that has come round may drop an old address while a removal left a hole
    (batched_cyclon's documented difference)."""
    rng = np.random.default_rng(5)
    view = [(a, 0) for a in (0, 9, 12, 15, 21, 30)]
    ref, batched = _pair(view, known=[9, 12, 33], config=CyclonConfig(view_size=6, shuffle_length=3, fallback_size=100))
    codes = [Outcome.DELIVERED, Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.REFUSED, Outcome.BUSY,
             Outcome.REPLY_LOST]
    for _ in range(60):
        peer = int(rng.choice([0, 9, 12, 15, 21, 30, 33]))
        outcome = codes[int(rng.integers(len(codes)))]
        ref.on_outcome(0.0, str(peer), outcome)
        batched.on_outcome(np.array([7]), np.array([peer]), np.array([CODE[outcome]]))
        _same(ref, batched)
        assert [int(a) for a in ref.vouched] == batched.vouched.in_order(7)


def test_a_reply_is_taken_in_and_its_partner_kept_while_there_is_room():
    ref, batched = _pair([(9, 1), (12, 2)])
    entries = [(20, 0), (21, 3), (12, 1)]
    ref.on_reply(0.0, ShuffleReply("30", tuple(PeerDescriptor(str(a), g) for a, g in entries)))
    batched.on_reply(np.array([7]), np.array([30]), np.array([[20, 21, 12]], np.int32), np.array([[0, 3, 1]]),
                     np.array([3]), np.full((1, 2), -1, np.int32), np.array([0]))
    _same(ref, batched)
    assert batched.vouched.in_order(7) == [30]


def test_a_shuffle_ages_the_view_and_contacts_the_oldest_entry():
    """Unvouched entries age by 2, vouched ones by 1; the oldest (first of equals) leaves the
    view and is the target; the request carries a fresh self-descriptor and ℓ-1 view entries."""
    ref, batched = _pair([(9, 3), (12, 4), (15, 2), (21, 0), (22, 3)])
    ref.vouched["15"] = None
    ref.vouched["12"] = None
    batched.vouched.add(np.array([7]), np.array([15], np.int32))
    batched.vouched.add(np.array([7]), np.array([12], np.int32))
    target, request = ref._shuffle(0.5)
    req = batched.tick_shuffle(np.array([7]), np.array([0.5]), np.random.default_rng(0))
    assert req.target.tolist() == [int(target)] == [9]  # 3 + 2 = 5 ties 4 + 1 (vouched) and 3 + 2: first wins
    _same(ref, batched)
    assert req.entries[0, 0] == 7 and req.ages[0, 0] == 0 and req.n_entries.tolist() == [len(request.entries)]
    sent = set(req.sent[0, : req.n_sent[0]].tolist())
    assert len(sent) == CFG.shuffle_length - 1 and sent <= {12, 15, 21, 22}
    assert batched.next_shuffle[7] == 1.5  # no jitter here


def test_an_empty_view_bootstraps_from_a_seed_telling_it_about_the_others():
    batched = BatchedCyclon(40, 3, CFG, np.random.default_rng(0))
    rows = np.arange(10, 30)
    req = batched.tick_shuffle(rows, np.zeros(20), np.random.default_rng(1))
    assert set(req.target.tolist()) <= {0, 1, 2}
    for i in range(20):
        entries = req.entries[i, : req.n_entries[i]].tolist()
        assert entries[0] == rows[i] and sorted(entries[1:]) == sorted({0, 1, 2} - {req.target[i]})
    assert (req.n_sent == 0).all()


def test_reseeding_asks_a_seed_or_a_book_address_outside_the_view():
    batched = BatchedCyclon(40, 2, CFG, np.random.default_rng(0))
    rows = np.arange(10, 40)
    batched.view[rows, 0], batched.vlen[rows] = 0, 1  # seed 0 is in every view
    batched.known.add(rows, np.full(30, 25, np.int32))
    batched.known.add(rows, np.full(30, 1, np.int32))  # a seed in the book counts as a seed
    req = batched.tick_reseed(rows, np.zeros(30), np.full(30, -1), np.random.default_rng(2))
    assert set(req.target.tolist()) == {1, 25}
    req = batched.tick_reseed(rows, np.zeros(30), np.full(30, 1), np.random.default_rng(2))
    assert set(req.target.tolist()) == {25}  # excluded: the partner of this slice's shuffle


def test_answers_ordered_per_state_are_the_answers_in_one_time_order(digits, monkeypatch):
    """A node whose answers in a slice are all alive vouches (books) and takes replies in
    (view) in two separate orders: the same run, view for view, as every node taking its
    answers in one time order (forced here by counting no outcome as vouching only)."""
    cfg = SimulationConfig(nodes=60, cycles=15, eval_every=15, seed=4, drop=0.1, online=0.9, view_size=6,
                           shuffle_length=3)
    split = BatchedSimulation.create(cfg, digits)
    r_split = split.run()
    monkeypatch.setattr(batched_module, "VOUCH_ONLY", np.zeros_like(batched_module.VOUCH_ONLY))
    one = BatchedSimulation.create(cfg, digits)
    r_one = one.run()
    assert r_split["final"] == r_one["final"]
    np.testing.assert_array_equal(split.peers.view, one.peers.view)
    np.testing.assert_array_equal(split.peers.vouched.slots, one.peers.vouched.slots)
    np.testing.assert_array_equal(split.models.params, one.models.params)


def test_subrounds_give_each_node_its_events_in_time_order():
    rng = np.random.default_rng(6)
    dst = rng.integers(0, 5, 40)
    t = rng.random(40)
    rounds = subrounds(dst, t)
    seen = np.concatenate(rounds)
    assert sorted(seen.tolist()) == list(range(40))
    for r in rounds:
        assert len(set(dst[r].tolist())) == len(r)
    position = {int(i): k for k, r in enumerate(rounds) for i in r}
    for node in range(5):
        mine = np.flatnonzero(dst == node)
        assert [position[int(i)] for i in mine[np.argsort(t[mine])]] == list(range(len(mine)))


def _model_events(sim: BatchedSimulation, src: list[int], dst: list[int], t: list[float]) -> Events:
    snap = sim.models.snapshot(np.array(src))
    fields = {f: getattr(snap, f) for f in ("params", "age", "count", "mean", "var") if getattr(snap, f) is not None}
    return Events(t=np.array(t), src=np.array(src), dst=np.array(dst), sent_at=np.array(t) - 0.05, **fields)


def test_a_node_merges_one_model_a_slice_in_arrival_order_and_none_waits_more_than_two_slices(digits, monkeypatch):
    assert batched_module.INBOX_SLICES == 2
    sim = BatchedSimulation.create(SimulationConfig(nodes=8, cycles=1, sampler="full", seed=1), digits)
    loop = batched_module._Loop(sim)
    merged: list[list[tuple[int, float]]] = []
    monkeypatch.setattr(sim.models, "deliver", lambda rows, msg, rng, counters: merged.append(
        sorted(zip(rows.tolist(), msg.age.tolist()))))
    sim.models.age[:] = np.arange(8.0)  # a message's age names its sender
    # slice 1: node 0 hears 5, 3, 4 (in that time order), node 1 hears 6
    loop.merge(_model_events(sim, [3, 4, 5, 6], [0, 0, 0, 1], [0.13, 0.17, 0.11, 0.15]), 1)
    assert merged == [[(0, 5.0), (1, 6.0)]]
    # slice 2: node 0 hears 7, node 1 hears 2: each merges its oldest, node 0's others wait on
    loop.merge(_model_events(sim, [7, 2], [0, 1], [0.21, 0.25]), 2)
    assert merged[1:] == [[(0, 3.0), (1, 2.0)]]
    # slice 3, nothing new: 4 has waited two slices, 7 one
    loop.merge(None, 3)
    assert merged[2:] == [[(0, 4.0)]] and loop.inbox["age"].tolist() == [7.0]
    loop.merge(None, 3, flush=True)  # the end of the run: everything waiting
    assert merged[3:] == [[(0, 7.0)]] and loop.inbox is None


def test_a_forward_arriving_in_its_slice_is_merged_and_forwarded_in_it(digits):
    """Token accounts: a useful merge forwards at once, and a forward that arrives before the
    slice ends is merged in that slice by a node that has not merged in it yet (which forwards
    in turn), and waits in the inbox at one that has, as a second model would."""
    sim = BatchedSimulation.create(SimulationConfig(nodes=6, cycles=1, sampler="full", seed=1, delay=0.0,
                                                    flow="tokens:1,4"), digits)
    loop = batched_module._Loop(sim)
    loop.tokens.tokens[:] = 3  # a / A = 3 forwards each, every one arriving at once (delay 0)
    k = 4
    loop.deliveries(_model_events(sim, [1], [0], [0.41]), None, k)
    merged = loop.counters["merged"]
    # 0 merged and sent 3; those reached nodes that merged and sent 3 each, and so on, in this
    # slice, until every node had merged once; what reached a node already done waits.
    assert merged.tolist() == [1] * 6 and loop.tokens.tokens.tolist() == [0] * 6
    assert loop.counters["sent"].sum() == 18 and len(loop.inbox) == 18 - 5
    assert loop.soon is None and not loop.calendar.pop(k + 1).get("model")


def test_a_busy_node_merges_every_model_within_two_slices_of_its_arrival(digits, monkeypatch):
    sim = BatchedSimulation.create(SimulationConfig(nodes=40, cycles=1, sampler="full", seed=1), digits)
    loop = batched_module._Loop(sim)
    merged: list[int] = []
    monkeypatch.setattr(sim.models, "deliver", lambda rows, msg, rng, counters: merged.extend(rows.tolist()))
    for k in range(6):  # 30 models reach node 0 in each slice
        loop.merge(_model_events(sim, list(range(1, 31)), [0] * 30, list(k * 0.1 + np.linspace(0.01, 0.09, 30))), k)
        assert len(merged) >= 30 * (k - 1)  # every model of the slices before the last two
        assert len(loop.inbox) <= 60


def test_the_calendar_never_files_an_event_into_a_slice_already_processed():
    cal = Calendar(10)
    cal.add("x", Events(t=np.array([0.05, 0.31, 0.57, 0.31]), dst=np.arange(4)), earliest=4)
    assert cal.pop(0) == {} and cal.pop(3) == {}
    assert cal.pop(4)["x"]["dst"].tolist() == [0, 1, 3]
    assert cal.pop(5)["x"]["dst"].tolist() == [2]


def test_ring_book_is_a_bounded_ordered_set():
    book = RingBook(3, 4)
    rows = np.array([1])
    for a in (5, 6, 5, 7, 8, 9):
        book.add(rows, np.array([a], np.int32))
    assert book.in_order(1) == [6, 7, 8, 9]
    book.remove(rows, np.array([7]))
    assert book.in_order(1) == [6, 8, 9] and book.contains(rows, np.array([8])).tolist() == [True]


@pytest.mark.parametrize("topology", ["ring", "kregular:4", "full"])
def test_static_peers_pick_neighbours_only(topology):
    addresses = [f"n{i}" for i in range(12)]
    overlay = build_overlay(topology, addresses, np.random.default_rng(0))
    peers = StaticPeers(overlay, {a: i for i, a in enumerate(addresses)})
    rows = np.repeat(np.arange(12), 50)
    picks = peers.select_peer(rows, np.random.default_rng(1))
    for i, p in zip(rows, picks):
        assert f"n{p}" in overlay[f"n{i}"]
    assert len({(int(i), int(p)) for i, p in zip(rows, picks)}) == sum(len(overlay[a]) for a in addresses)

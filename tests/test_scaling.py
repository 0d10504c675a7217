"""Scaling statistics: exact pooling, the gossip merge, their trip over the wire, how
nodes agree on them, and the scaling options of a simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gossipd import wire
from gossipd.core.learner import make_learner
from gossipd.core.messages import ModelMessage
from gossipd.core.scaling import MIN_STD, FeatureStats, Scaling
from gossipd.core.spec import Schema
from gossipd.data import DataError, load_dataset, make_scaling
from gossipd.sim.simulation import Simulation, SimulationConfig

finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)


def blocks(min_rows: int = 1):
    return st.integers(1, 4).flatmap(lambda k: st.tuples(
        arrays(np.float64, st.tuples(st.integers(min_rows, 12), st.just(k)), elements=finite),
        arrays(np.float64, st.tuples(st.integers(min_rows, 12), st.just(k)), elements=finite)))


@settings(max_examples=60, deadline=None)
@given(blocks())
def test_pooled_equals_the_statistics_of_the_union(ab):
    a, b = ab
    pooled = FeatureStats.of(a).pooled(FeatureStats.of(b))
    exact = FeatureStats.of(np.vstack([a, b]))
    assert pooled.count == exact.count == len(a) + len(b)
    np.testing.assert_allclose(pooled.mean, exact.mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pooled.var, exact.var, rtol=1e-7, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(blocks())
def test_merge_is_count_weighted_symmetric_and_keeps_the_larger_count(ab):
    a, b = FeatureStats.of(ab[0]), FeatureStats.of(ab[1])
    ab_, ba = a.merge(b), b.merge(a)
    assert ab_.count == ba.count == max(a.count, b.count)
    np.testing.assert_allclose(ab_.mean, ba.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ab_.var, ba.var, rtol=1e-9, atol=1e-9)
    # Count-weighted: the mean and variance are those of the union, only the count differs.
    union = a.pooled(b)
    np.testing.assert_allclose(ab_.mean, union.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ab_.var, union.var, rtol=1e-12, atol=1e-12)
    assert (ab_.var >= 0).all()
    # Merging an estimate with itself changes nothing.
    same = a.merge(a)
    assert same.count == a.count
    np.testing.assert_allclose(same.mean, a.mean)
    np.testing.assert_allclose(same.var, a.var, atol=1e-12)


def test_merge_weights_by_count():
    a = FeatureStats(3.0, [0.0], [1.0])
    b = FeatureStats(1.0, [4.0], [1.0])
    m = a.merge(b)
    assert m.mean[0] == pytest.approx(1.0)  # (3*0 + 1*4) / 4
    assert m.var[0] == pytest.approx(1.0 + 0.75 * 0.25 * 16)  # within + between
    assert m.count == 3.0
    empty = FeatureStats.of(np.zeros((0, 1)))
    assert empty.merge(b).mean[0] == 4.0  # no examples: no weight


def test_std_floor_and_validation():
    s = FeatureStats.of(np.array([[1.0, 5.0], [1.0, 7.0]]))
    assert s.std[0] == 1.0 and s.var[0] == 0.0  # a constant column is left unscaled
    assert s.std[1] == pytest.approx(1.0)
    assert MIN_STD < 1e-3
    for bad in (dict(count=-1, mean=[0.0], var=[1.0]), dict(count=1, mean=[np.nan], var=[1.0]),
                dict(count=1, mean=[0.0], var=[-1.0]), dict(count=1, mean=[0.0, 1.0], var=[1.0])):
        with pytest.raises(ValueError):
            FeatureStats(**bad)
    with pytest.raises(ValueError):
        FeatureStats.fixed([0.0], [0.0])
    with pytest.raises(ValueError):
        Scaling("fixed")
    with pytest.raises(ValueError):
        Scaling("global")


def test_dict_round_trip_keeps_values_and_digest():
    s = FeatureStats.of(np.random.default_rng(0).standard_normal((20, 3)))
    back = FeatureStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.equals(s) and back.digest() == s.digest()


# ------------------------------------------------------------------ the wire


def test_stats_travel_in_model_messages():
    stats = FeatureStats.of(np.random.default_rng(1).standard_normal((9, 5)) * 3 + 1)
    msg = ModelMessage("http://a:1", "arch", 7.0, np.arange(4, dtype=np.float32), stats)
    body = wire.encode(msg, cluster="c")
    assert len(body) == wire.encoded_size(msg, "c") == wire.encoded_model_size(4, "http://a:1", "arch", "c", 5)
    got = wire.decode(body, cluster="c", expected_stats=5)
    assert isinstance(got, ModelMessage) and got.stats is not None
    assert got.stats.count == 9.0
    np.testing.assert_allclose(got.stats.mean, stats.mean, rtol=1e-6)  # float32 on the wire
    np.testing.assert_allclose(got.stats.var, stats.var, rtol=1e-6)
    np.testing.assert_array_equal(got.params, msg.params)
    assert got.params.ctypes.data % 4 == 0  # still aligned, zero-copy
    plain = wire.decode(wire.encode(ModelMessage("http://a:1", "arch", 7.0, msg.params), cluster="c"), cluster="c")
    assert plain.stats is None


@pytest.mark.parametrize(("stats", "expected", "code"), [
    (None, 5, "missing_field"),
    (FeatureStats.of(np.ones((2, 4))), 5, "bad_stats"),
])
def test_wire_rejects_missing_or_wrong_stats(stats, expected, code):
    body = wire.encode(ModelMessage("http://a:1", "arch", 1.0, np.zeros(3, np.float32), stats), cluster="c")
    with pytest.raises(wire.WireError) as info:
        wire.decode(body, cluster="c", expected_stats=expected)
    assert info.value.code == code and info.value.status == 400


@pytest.mark.parametrize("stats", [
    {"count": -1.0, "mean": b"\0" * 4, "var": b"\0" * 4},
    {"count": 1.0, "mean": b"\0" * 4, "var": b"\0" * 8},
    {"count": 1.0, "mean": b"\0" * 4, "var": np.array([-1.0], "<f4").tobytes()},
    {"count": 1.0, "mean": np.array([np.nan], "<f4").tobytes(), "var": b"\0" * 4},
    {"count": 1.0, "mean": b"\0" * 4},
    [1, 2],
])
def test_wire_rejects_malformed_stats(stats):
    import msgpack

    body = msgpack.packb({"v": 1, "type": "model", "cluster": "c", "sender": "http://a:1", "arch": "x", "age": 1.0,
                          "stats": stats, "params": {"dtype": "<f4", "shape": [1], "data": b"\0" * 4}},
                         use_bin_type=True)
    with pytest.raises(wire.WireError) as info:
        wire.decode(body, cluster="c")
    assert info.value.status == 400 and info.value.code in ("bad_stats", "bad_field", "missing_field")


# ------------------------------------------------------------------ agreement across a network


def test_nodes_agree_on_scaling_and_it_is_close_to_the_pooled_statistics(digits):
    """Under a label-skewed split each node's own statistics differ; after gossip they agree."""
    cfg = SimulationConfig(nodes=30, cycles=25, split="labels", eval_every=25, seed=3)
    sim = Simulation.create(cfg, digits)
    before = np.stack([n.stats.mean for n in sim.nodes])
    sim.run()
    after = np.stack([n.stats.mean for n in sim.nodes])
    exact = FeatureStats.of(digits.X_train)
    spread_before = np.abs(before - before.mean(axis=0)).max()
    spread_after = np.abs(after - after.mean(axis=0)).max()
    assert spread_before > 1.0  # pixels 0..16: local means differ by whole grey levels
    assert spread_after < 0.01 * spread_before
    # A consensus near the pooled statistics (a weighted mean of the nodes', not exactly them).
    assert np.abs((after.mean(axis=0) - exact.mean) / exact.std).max() < 0.4
    std = np.stack([n.stats.std for n in sim.nodes]).mean(axis=0)
    varying = exact.std > 1
    assert np.abs(std[varying] / exact.std[varying] - 1).max() < 0.25
    assert all(n.stats.count >= min(len(m.data) for m in sim.nodes) for n in sim.nodes)


def test_fixed_scaling_from_a_file(tmp_path, digits):
    mean, std = digits.X_train.mean(axis=0), digits.X_train.std(axis=0) + 1.0
    path = tmp_path / "scale.json"
    path.write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist()}))
    scaling = make_scaling(f"fixed:{path}", digits.schema)
    assert scaling.mode == "fixed" and not scaling.learned
    np.testing.assert_allclose(scaling.stats.mean, mean)
    np.testing.assert_allclose(scaling.stats.std, std)
    learner = make_learner("logreg", digits.schema, scaling=scaling)
    assert learner.stats_for(None) is scaling.stats
    np.savez(tmp_path / "scale.npz", mean=mean, std=std)
    assert make_scaling(f"fixed:{tmp_path / 'scale.npz'}", digits.schema).stats.digest() == scaling.stats.digest()
    # Regression: the target's statistics are optional (default: unscaled).
    diabetes = load_dataset("diabetes")
    (tmp_path / "d.json").write_text(json.dumps({"mean": [0.0] * 10, "std": [1.0] * 10, "target_mean": 150.0,
                                                  "target_std": 75.0}))
    d = make_scaling(f"fixed:{tmp_path / 'd.json'}", diabetes.schema).stats
    assert d.size == 11 and d.mean[10] == 150.0 and d.std[10] == 75.0


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "not found"),
    ("not json", "cannot read"),
    ('{"mean": [0]}', "needs 'mean' and 'std'"),
    ('{"mean": [0, 1], "std": [1, 1]}', "2 means and 2 stds for 64 features"),
    ('{"mean": [0], "std": [0]}', "means"),
])
def test_fixed_scaling_file_errors_name_the_file(tmp_path, digits, content, fragment):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as info:
        make_scaling(f"fixed:{path}", digits.schema)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_network_scaling_refuses_too_many_columns():
    with pytest.raises(DataError, match="at most 256"):
        make_scaling("network", Schema.classification(300, 2))
    assert make_scaling("none", Schema.classification(300, 2)).mode == "none"

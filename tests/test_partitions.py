"""Partitioned models: the mapping, the per-partition (robust) merge, and nodes that push parts."""

from __future__ import annotations

import numpy as np
import pytest

from gossipd.core.learner import LearnerConfig, make_learner
from gossipd.core.merge import RobustMerge, merge_age, merge_parts
from gossipd.core.messages import ModelMessage, Parts
from gossipd.core.node import GossipConfig, GossipNode, RejectedMessage
from gossipd.core.partition import Layout, carried_count
from gossipd.core.scaling import Scaling
from gossipd.core.spec import Schema
from gossipd.core.state import ModelState
from peer_sampling.topology import StaticSampler


def test_layout_covers_every_coordinate_once_in_even_strides() -> None:
    layout = Layout(650, 10)
    seen = np.concatenate([layout.coordinates((k,)) for k in range(10)])
    assert sorted(seen.tolist()) == list(range(650))
    assert layout.sizes.max() - layout.sizes.min() <= 1
    assert layout.coordinates((3,))[:3].tolist() == [3, 13, 23]  # i mod P
    x = np.arange(650, dtype=np.float32)
    assert layout.gather(x, (1, 4)).tolist() == list(range(1, 650, 10)) + list(range(4, 650, 10))
    assert layout.size_of((1, 4)) == 130
    chosen = layout.choose(np.random.default_rng(0), 3)
    assert len(set(chosen)) == 3 and list(chosen) == sorted(chosen)
    assert carried_count(10, 0.1) == 1 and carried_count(10, 0.01) == 1 and carried_count(10, 1.0) == 10
    with pytest.raises(ValueError):
        Layout(5, 10)


def cut(params: np.ndarray, ages: list[float]) -> ModelState:
    return ModelState(params, ages=np.array(ages))


def test_robust_merge_of_some_partitions_leaves_the_others_bit_for_bit() -> None:
    layout = Layout(40, 4)
    rng = np.random.default_rng(1)
    local = cut(rng.standard_normal(40).astype(np.float32), [100.0, 100.0, 50.0, 0.0])
    remote = rng.standard_normal(40).astype(np.float32)
    parts = Parts(4, (1, 3), (100.0, 300.0))
    merged = merge_parts(RobustMerge(max_age_lead=1000.0), local, layout.gather(remote, (1, 3)), parts, layout)
    for k in (0, 2):
        assert np.array_equal(merged.params[k::4], local.params[k::4])
        assert merged.ages[k] == local.ages[k]
    # The first message is taken as "age" would: partition 1 halfway (100 vs 100), partition 3 fully (0 vs 300).
    assert np.allclose(merged.params[1::4], (local.params[1::4] + remote[1::4]) / 2, atol=1e-6)
    assert np.allclose(merged.params[3::4], remote[3::4], atol=1e-6)
    assert merged.ages.tolist() == [100.0, 100.0, 50.0, 300.0]
    assert merged.age == pytest.approx(137.5)


def test_robust_merge_per_partition_caps_ages_and_clips_far_models() -> None:
    layout = Layout(40, 4)
    rule = RobustMerge(max_age_lead=10.0)
    x = np.zeros(40, np.float32)
    local = cut(x, [5.0] * 4)
    # Near models fill the radius history (distances scaled to the whole model: equal for any subset).
    for i in range(8):
        near = np.full(10, 0.01 * (1 + i % 2), np.float32)
        local = merge_parts(rule, local, near, Parts(4, (i % 4,), (5.0,)), layout)
    before = local
    liar = merge_parts(rule, before, np.full(10, 1e4, np.float32), Parts(4, (2,), (1e300,)), layout)
    assert liar.ages[2] <= before.ages[2] + 10.0  # the claimed age is capped per partition
    assert rule.last_clip < 1e-6
    assert np.abs(liar.params[2::4] - before.params[2::4]).max() < 1.0  # a 1e4 model barely moves it
    assert np.array_equal(liar.params[0::4], before.params[0::4])


def test_robust_clip_judges_each_partition_in_its_own_scale() -> None:
    """Partitions differ in scale (here partition 0 moves 10x more than the others): judged
    against one window of distances scaled to the whole model, every honest message of
    partition 0 was clipped; measured in each partition's own scale they are taken whole,
    and a liar is still clipped within that partition's radius."""
    layout = Layout(40, 4)
    rule = RobustMerge(max_age_lead=10.0)
    local = cut(np.zeros(40, np.float32), [5.0] * 4)
    rng = np.random.default_rng(4)
    clips = {k: [] for k in range(4)}
    for i in range(64):
        k = i % 4
        scale = 1.0 if k == 0 else 0.1
        merge_parts(rule, local, (scale * (1 + 0.1 * rng.standard_normal(10))).astype(np.float32),
                    Parts(4, (k,), (5.0,)), layout)
        clips[k].append(rule.last_clip)
    assert all(c == 1.0 for k in range(4) for c in clips[k][4:])  # past each window's first entries
    liar = merge_parts(rule, local, np.full(10, 100.0, np.float32), Parts(4, (0,), (5.0,)), layout)
    assert rule.last_clip < 1e-3
    # w = 0.5 (equal ages), radius 1.5 x the first quartile of partition 0's distances (about sqrt(10)).
    assert np.linalg.norm(liar.params[0::4] - local.params[0::4]) < 0.5 * 1.5 * np.sqrt(10) * 1.3
    assert np.array_equal(liar.params[1::4], local.params[1::4])


def test_a_message_of_some_partitions_moves_no_further_than_a_whole_model_could() -> None:
    """A message carrying partitions S moves the model at most w * tau * sqrt(sum over S of s_k^2)
    (s_k: partition k's scale): within the bound of a whole-model message."""
    layout = Layout(60, 6)
    rule = RobustMerge(max_age_lead=10.0)
    local = cut(np.zeros(60, np.float32), [5.0] * 6)
    rng = np.random.default_rng(5)
    for _ in range(20):  # honest whole models fill every partition's window
        merge_parts(rule, local, (0.1 * rng.standard_normal(60)).astype(np.float32),
                    Parts(6, tuple(range(6)), (5.0,) * 6), layout)
    far = np.full(60, 5.0, np.float32)
    whole = merge_parts(rule, local, far, Parts(6, tuple(range(6)), (5.0,) * 6), layout)
    some = merge_parts(rule, local, far[:20], Parts(6, (1, 4), (5.0,) * 2), layout)
    assert 0 < np.linalg.norm(some.params - local.params) < np.linalg.norm(whole.params - local.params)


def test_all_partitions_at_one_age_merge_as_the_whole_model() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(30).astype(np.float32), rng.standard_normal(30).astype(np.float32)
    whole = RobustMerge()(ModelState(a, 20.0), ModelState(b, 60.0))
    parted = merge_parts(RobustMerge(), cut(a, [20.0] * 3), b[np.concatenate([np.arange(k, 30, 3) for k in range(3)])],
                         Parts(3, (0, 1, 2), (60.0,) * 3), Layout(30, 3))
    assert np.allclose(parted.params, whole.params, atol=1e-6) and parted.age == pytest.approx(whole.age)
    plain = merge_parts(merge_age, cut(a, [20.0, 60.0, 20.0]), b[1::3], Parts(3, (1,), (20.0,)), Layout(30, 3))
    assert np.allclose(plain.params[1::3], 0.75 * a[1::3] + 0.25 * b[1::3], atol=1e-6)
    assert plain.ages.tolist() == [20.0, 60.0, 20.0]


# ---------------------------------------------------------------- nodes


@pytest.fixture
def learner():
    # 4 features x 3 classes + 3 = 15 parameters; network-learned scaling, so statistics travel.
    return make_learner("logreg", Schema.classification(4, 3), LearnerConfig(lr=0.5, init_seed=0),
                        scaling=Scaling.network())


def node(address: str, peer: str, learner, data, *, seed: int, **knobs) -> GossipNode:
    return GossipNode(address=address, learner=learner, data=data,
                      sampler=StaticSampler(address, [peer], np.random.default_rng(seed)),
                      config=GossipConfig(interval=1.0, jitter=0.0, **knobs), rng=np.random.default_rng(seed))


def test_nodes_push_random_partitions_with_their_ages_and_statistics_ride_with_partition_0(
        learner, make_local_data) -> None:
    a = node("a", "b", learner, make_local_data(10, 4, 3, seed=1), seed=1, partitions=5, subsample=0.4,
             codec="int8")
    b = node("b", "a", learner, make_local_data(12, 4, 3, seed=2), seed=2, partitions=5, subsample=0.4,
             codec="int8")
    assert a.state.ages.tolist() == [0.0] * 5
    seen = set()
    for _ in range(20):
        msg = a.push().message
        assert isinstance(msg, ModelMessage) and msg.codec == "int8" and len(msg.parts.index) == 2
        assert msg.params.size == Layout(15, 5).size_of(msg.parts.index)
        assert (msg.stats is not None) == (msg.parts.index[0] == 0)
        seen.update(msg.parts.index)
        before = b.state
        b.on_model(0.0, msg)
        # Training updates every partition: each ages by the 12 examples, the carried ones also by the merge.
        assert all(b.state.ages[k] >= before.ages[k] + 12 for k in range(5))
    assert seen == set(range(5))
    assert b.counters.merged == 20 and b.counters.rejected == 0


def test_a_whole_model_merges_into_every_partition_and_another_cut_is_refused(learner, make_local_data) -> None:
    data = make_local_data(10, 4, 3, seed=1)
    whole = node("a", "b", learner, data, seed=1).push().message  # P = 1: no parts, v1 on the wire
    assert whole.parts is None and whole.codec == "fp32"
    b = node("b", "a", learner, data, seed=2, partitions=3)
    b.on_model(0.0, whole)
    assert b.state.ages.shape == (3,) and len(set(b.state.ages.tolist())) == 1
    other = node("c", "b", learner, data, seed=3, partitions=5, subsample=0.2).push().message
    with pytest.raises(RejectedMessage, match="5 partitions"):
        b.on_model(0.0, other)
    with pytest.raises(RejectedMessage, match="5 partitions"):
        node("d", "b", learner, data, seed=4).on_model(0.0, other)
    assert b.counters.rejected == 1


@pytest.mark.parametrize("engine", ["exact", "batched"])
def test_more_partitions_than_parameters_is_a_config_error_on_both_engines(engine: str) -> None:
    from gossipd.sim.config import ConfigError
    from gossipd.sim.simulation import SimulationConfig, simulate

    with pytest.raises(ConfigError) as exc:  # wine / logreg: 42 parameters
        simulate(SimulationConfig(dataset="wine", nodes=10, cycles=2, partitions=100, subsample=0.1, engine=engine))
    assert exc.value.field == "partitions" and "only 42 parameters" in str(exc.value)

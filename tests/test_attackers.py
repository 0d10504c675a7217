"""Simulated attackers: parsing, what each kind sends, and that an attacker is
otherwise an ordinary node (it merges, trains and samples)."""

from __future__ import annotations

import numpy as np
import pytest

from gossipd.core.messages import ModelMessage
from gossipd.core.node import GossipConfig, GossipNode
from gossipd.core.scaling import FeatureStats
from gossipd.sim.attackers import CLAIMED_AGE, AttackingNode, ClaimAge, LieAboutScaling, Noise, Scale, parse_attackers
from peer_sampling.topology import StaticSampler


@pytest.mark.parametrize(
    ("spec", "kind", "attack"),
    [("0.2:age", "age", ClaimAge()), ("0.2:age:zero", "age:zero", ClaimAge(zero=True)),
     ("0.1:scale:10", "scale:10", Scale(10.0)), ("0.5:signflip", "signflip", Scale(-1.0)),
     ("0.3:noise:0.5", "noise:0.5", Noise(0.5)), (" 0.2:zero ", "zero", Scale(0.0)),
     ("0.2:stats", "stats", LieAboutScaling())],
)
def test_parse_attackers(spec, kind, attack):
    parsed = parse_attackers(spec)
    assert (parsed.kind, parsed.attack) == (kind, attack)


@pytest.mark.parametrize("spec", ["age", "0:age", "1:age", "-0.1:age", "x:age", "0.2:", "0.2:bogus", "0.2:scale",
                                  "0.2:scale:x", "0.2:scale:inf", "0.2:noise:0", "0.2:noise:-1", "0.2:signflip:2",
                                  "0.2:age:one"])
def test_parse_attackers_rejects(spec):
    with pytest.raises(ValueError):
        parse_attackers(spec)


def test_choose_draws_that_share_of_nodes_reproducibly():
    spec = parse_attackers("0.2:zero")
    a = spec.choose(100, np.random.default_rng(1))
    assert a.sum() == 20 and np.array_equal(a, spec.choose(100, np.random.default_rng(1)))
    assert spec.choose(3, np.random.default_rng(1)).sum() == 1  # at least one, never all
    assert parse_attackers("0.9:zero").choose(3, np.random.default_rng(1)).sum() == 2


def test_each_kind_corrupts_as_documented():
    params = np.array([1.0, -2.0, 3.0], np.float32)
    msg = ModelMessage("a", "fp", 50.0, params)
    rng = np.random.default_rng(0)
    age = ClaimAge().corrupt(msg, rng)
    assert age.age == CLAIMED_AGE and age.params.shape == (3,) and not np.array_equal(age.params, params)
    assert not np.array_equal(age.params, ClaimAge().corrupt(msg, rng).params)  # fresh randomness per push
    zero_age = ClaimAge(zero=True).corrupt(msg, rng)
    assert zero_age.age == CLAIMED_AGE and not zero_age.params.any()
    scaled = Scale(10.0).corrupt(msg, rng)
    assert scaled.age == 50.0 and np.array_equal(scaled.params, params * 10)
    noisy = Noise(0.1).corrupt(msg, rng)
    assert noisy.age == 50.0 and 0 < np.abs(noisy.params - params).max() < 1.0
    for out in (age, scaled, noisy):
        assert out.params.dtype == np.float32 and out.sender == "a" and out.arch == "fp"
    assert np.array_equal(msg.params, [1.0, -2.0, 3.0])  # the attacker's own model is untouched
    assert LieAboutScaling().corrupt(msg, rng) is msg  # no statistics travel: nothing to lie about
    honest_stats = FeatureStats(20.0, np.zeros(2), np.ones(2))
    lie = LieAboutScaling().corrupt(ModelMessage("a", "fp", 50.0, params, stats=honest_stats), rng)
    assert np.array_equal(lie.params, params) and lie.age == 50.0
    assert lie.stats.count == CLAIMED_AGE and (lie.stats.mean == 100.0).all()


def test_an_attacker_pushes_lies_but_otherwise_is_an_ordinary_node(small_learner, make_local_data):
    data = make_local_data(10, 4, 3, seed=1)
    common = dict(learner=small_learner, data=data, config=GossipConfig(interval=1.0, jitter=0.0),
                  state=small_learner.initial_state())
    evil = AttackingNode(address="e", sampler=StaticSampler("e", ["h"], np.random.default_rng(0)),
                         rng=np.random.default_rng(1), attack=Scale(-1.0), attack_rng=np.random.default_rng(2),
                         **common)
    honest = GossipNode(address="h", sampler=StaticSampler("h", ["e"], np.random.default_rng(0)),
                        rng=np.random.default_rng(3), **common)
    for t in range(1, 4):
        (push,) = honest.on_tick(float(t))
        evil.on_model(float(t), push.message)  # it learns like everyone else
    assert evil.counters.merged == 3 and evil.state.age > 0
    (lie,) = evil.on_tick(10.0)
    assert lie.peer == "h" and evil.counters.sent == 1
    assert np.array_equal(lie.message.params, -evil.state.params)
    assert lie.message.age == evil.state.age

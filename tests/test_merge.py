"""Merge rules: property tests over random float32 vectors and ages.

Hypothesis runs derandomized (a fixed seed per test), so failures reproduce.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gossipd.core.merge import RobustMerge, merge_age, merge_average, merge_limited, merge_overwrite, parse_merge
from gossipd.core.state import ModelState

SEEDED = settings(derandomize=True, deadline=None, max_examples=200)

# Magnitudes well inside float32 range, so a sum of two never overflows.
ELEMENTS = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=32)
AGES = st.one_of(
    st.just(0.0),
    st.integers(min_value=0, max_value=10**6).map(float),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
)
SYMMETRIC = {"age": merge_age, "average": merge_average}


@st.composite
def model_pairs(draw, same_params: bool = False):
    """Two ModelStates of the same (random) size, with random ages."""
    n = draw(st.integers(min_value=1, max_value=40))
    a = draw(hnp.arrays(np.float32, n, elements=ELEMENTS))
    b = a.copy() if same_params else draw(hnp.arrays(np.float32, n, elements=ELEMENTS))
    return ModelState(a, draw(AGES)), ModelState(b, draw(AGES))


def tolerance(*states: ModelState) -> float:
    """A few float32 ulps of the largest magnitude involved."""
    scale = max(float(np.abs(s.params).max()) for s in states)
    return 8 * float(np.finfo(np.float32).eps) * max(scale, 1.0)


# ------------------------------------------------------------ symmetric rules


@pytest.mark.parametrize("rule", sorted(SYMMETRIC))
@SEEDED
@given(pair=model_pairs())
def test_symmetric_rules_do_not_depend_on_who_is_local(rule, pair):
    local, remote = pair
    merge = SYMMETRIC[rule]
    ab, ba = merge(local, remote), merge(remote, local)
    np.testing.assert_allclose(ab.params, ba.params, rtol=0, atol=tolerance(local, remote))
    assert ab.age == ba.age


@pytest.mark.parametrize("rule", sorted(SYMMETRIC))
@SEEDED
@given(pair=model_pairs(same_params=True))
def test_merging_equal_models_is_identity(rule, pair):
    local, remote = pair
    merged = SYMMETRIC[rule](local, remote)
    np.testing.assert_allclose(merged.params, local.params, rtol=0, atol=tolerance(local))
    assert merged.age == max(local.age, remote.age)


@pytest.mark.parametrize("rule", ["age", "average", "limited:0", "limited:1000"])
@SEEDED
@given(pair=model_pairs())
def test_result_is_finite_convex_combination_with_age_max(rule, pair):
    local, remote = pair
    merged = parse_merge(rule)(local, remote)
    assert merged.params.dtype == np.float32
    assert merged.params.shape == local.params.shape
    assert np.isfinite(merged.params).all()
    lo = np.minimum(local.params, remote.params)
    hi = np.maximum(local.params, remote.params)
    tol = tolerance(local, remote)
    assert (merged.params >= lo - tol).all()
    assert (merged.params <= hi + tol).all()
    assert merged.age == max(local.age, remote.age)


@SEEDED
@given(pair=model_pairs())
def test_age_weighted_average_matches_its_formula(pair):
    local, remote = pair
    assume(local.age + remote.age > 0)
    total = local.age + remote.age
    expected = (local.age * local.params.astype(np.float64) + remote.age * remote.params.astype(np.float64)) / total
    merged = merge_age(local, remote)
    np.testing.assert_allclose(merged.params, expected, rtol=0, atol=tolerance(local, remote))


def test_age_weighting_favours_the_older_model():
    young = ModelState(np.zeros(3, np.float32), 1.0)
    old = ModelState(np.ones(3, np.float32), 3.0)
    merged = merge_age(young, old)
    np.testing.assert_allclose(merged.params, 0.75, rtol=1e-6)  # 3/(1+3) of the way to the old model
    assert merged.age == 3.0


@SEEDED
@given(pair=model_pairs())
def test_both_ages_zero_gives_plain_mean(pair):
    local, remote = pair
    local, remote = ModelState(local.params, 0.0), ModelState(remote.params, 0.0)
    merged = merge_age(local, remote)
    mean = (local.params.astype(np.float64) + remote.params.astype(np.float64)) / 2
    np.testing.assert_allclose(merged.params, mean, rtol=0, atol=tolerance(local, remote))
    assert np.isfinite(merged.params).all()  # no 0/0
    assert merged.age == 0.0


@SEEDED
@given(pair=model_pairs())
def test_inputs_are_not_modified(pair):
    local, remote = pair
    before = local.params.copy(), remote.params.copy()
    for rule in ("robust", "age", "average", "overwrite", "limited:5"):
        parse_merge(rule)(local, remote)
    assert np.array_equal(local.params, before[0]) and np.array_equal(remote.params, before[1])


# ------------------------------------------------------------ limited and overwrite


@SEEDED
@given(pair=model_pairs(), limit=st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_limited_keeps_older_model_when_ages_far_apart_else_age_weighted(pair, limit):
    local, remote = pair
    merged = merge_limited(local, remote, limit=limit)
    if abs(local.age - remote.age) > limit:
        older = local if local.age >= remote.age else remote
        assert np.array_equal(merged.params, older.params)
        assert merged.age == older.age
    else:
        reference = merge_age(local, remote)
        assert np.array_equal(merged.params, reference.params)
        assert merged.age == reference.age


@pytest.mark.parametrize(
    ("local_age", "remote_age", "limit", "kept"),
    [
        (100.0, 10.0, 50.0, "local"),   # differ by 90 > 50: the older local model stays
        (10.0, 100.0, 50.0, "remote"),  # the older remote model replaces the young local one
        (10.0, 60.0, 50.0, None),       # differ by exactly L: age-weighted
        (10.0, 20.0, 50.0, None),
    ],
)
def test_limited_examples(local_age, remote_age, limit, kept):
    local = ModelState(np.full(4, 1.0, np.float32), local_age)
    remote = ModelState(np.full(4, 3.0, np.float32), remote_age)
    merged = parse_merge(f"limited:{limit:g}")(local, remote)
    if kept == "local":
        assert np.array_equal(merged.params, local.params)
    elif kept == "remote":
        assert np.array_equal(merged.params, remote.params)
    else:
        w = local_age / (local_age + remote_age)
        np.testing.assert_allclose(merged.params, w * 1.0 + (1 - w) * 3.0, rtol=1e-6)
    assert merged.age == max(local_age, remote_age)


@SEEDED
@given(pair=model_pairs())
def test_overwrite_returns_the_remote(pair):
    local, remote = pair
    merged = merge_overwrite(local, remote)
    assert np.array_equal(merged.params, remote.params)
    assert merged.age == remote.age


def test_merged_state_is_read_only():
    a = ModelState(np.zeros(3, np.float32), 1.0)
    b = ModelState(np.ones(3, np.float32), 2.0)
    for rule in ("robust", "age", "average", "overwrite", "limited:0"):
        merged = parse_merge(rule)(a, b)
        with pytest.raises(ValueError):
            merged.params[0] = 5.0


# ------------------------------------------------------------ parse_merge


@pytest.mark.parametrize("spec", ["robust", "age", "average", "overwrite", " age ", "limited:0", "limited:100",
                                  "limited:2.5"])
def test_parse_merge_accepts(spec):
    rule = parse_merge(spec)
    out = rule(ModelState(np.zeros(2, np.float32), 1.0), ModelState(np.ones(2, np.float32), 1.0))
    assert isinstance(out, ModelState)


@pytest.mark.parametrize(
    "spec",
    ["limited:", "limited:-1", "limited:x", "limited:nan", "limited:inf", "limited", "foo", "age:3",
     "average:1", "overwrite:0", "", "AGE", "robust:2"],
)
def test_parse_merge_rejects(spec):
    with pytest.raises(ValueError):
        parse_merge(spec)


def test_parse_merge_simple_names_map_to_their_rules():
    a = ModelState(np.zeros(2, np.float32), 1.0)
    b = ModelState(np.full(2, 4.0, np.float32), 3.0)
    assert np.array_equal(parse_merge("age")(a, b).params, np.full(2, 3.0, np.float32))
    assert np.array_equal(parse_merge("average")(a, b).params, np.full(2, 2.0, np.float32))
    assert np.array_equal(parse_merge("overwrite")(a, b).params, b.params)


def test_parse_merge_limited_uses_the_given_limit():
    young = ModelState(np.zeros(2, np.float32), 0.0)
    old = ModelState(np.ones(2, np.float32), 10.0)
    # ages differ by 10: limit 9 keeps the old model, limit 10 mixes (and the age-0 side weighs 0)
    assert np.array_equal(parse_merge("limited:9")(young, old).params, old.params)
    mixed = parse_merge("limited:10")(ModelState(np.zeros(2, np.float32), 1.0), ModelState(np.ones(2, np.float32), 11.0))
    assert 0.0 < float(mixed.params[0]) < 1.0


# ------------------------------------------------------------ robust


def state(value: float, age: float, n: int = 4) -> ModelState:
    return ModelState(np.full(n, value, np.float32), age)


def warmed(distance: float = 1.0, n: int = 16, **knobs) -> RobustMerge:
    """A robust rule that has recently heard ``n`` models ``distance`` away (in 4-D)."""
    rule = RobustMerge(**knobs)
    for _ in range(n):
        rule(state(0.0, 10.0), state(distance / 2.0, 10.0))  # |(d/2,)*4| = d
    return rule


def test_parse_merge_robust_gives_each_node_its_own_history():
    a, b = parse_merge("robust"), parse_merge("robust")
    assert isinstance(a, RobustMerge) and a is not b
    a(state(0.0, 1.0), state(1.0, 1.0))
    assert a.radius() < float("inf") and b.radius() == float("inf")


@SEEDED
@given(pair=model_pairs(), warm=st.floats(min_value=1e-3, max_value=1e3))
def test_robust_is_a_convex_step_towards_the_remote_with_bounded_age(pair, warm):
    local, remote = pair
    rule = warmed(warm, max_age_lead=100.0)
    merged = rule(local, remote)
    assert np.isfinite(merged.params).all()
    lo, hi = np.minimum(local.params, remote.params), np.maximum(local.params, remote.params)
    tol = tolerance(local, remote)
    assert (merged.params >= lo - tol).all() and (merged.params <= hi + tol).all()
    assert local.age <= merged.age <= max(local.age, min(remote.age, local.age + 100.0)) + 1e-9


@SEEDED
@given(pair=model_pairs())
def test_robust_without_history_or_outliers_is_the_age_rule(pair):
    """Unclipped and within the age lead, ``robust`` does what ``age`` does."""
    local, remote = pair
    assume(abs(remote.age - local.age) <= 300.0)  # the default lead of parse_merge
    merged, reference = parse_merge("robust")(local, remote), merge_age(local, remote)
    np.testing.assert_allclose(merged.params, reference.params, rtol=0, atol=tolerance(local, remote))
    assert merged.age == pytest.approx(reference.age)


def test_a_claimed_huge_age_weighs_what_the_age_lead_allows_and_does_not_spread():
    local = state(0.0, 1000.0)
    liar, modest = state(1.0, 1e300), state(1.0, 1050.0)
    a, b = RobustMerge(max_age_lead=50.0)(local, liar), RobustMerge(max_age_lead=50.0)(local, modest)
    assert np.array_equal(a.params, b.params)  # 1e300 counts as 1000 + 50
    np.testing.assert_allclose(a.params, 1050.0 / 2050.0, rtol=1e-6)
    assert a.age == b.age == 1050.0
    # under `age`, the same message replaces the model and its age
    assert merge_age(local, liar).age == 1e300


def test_far_models_barely_move_us_and_lend_little_age():
    rule = warmed(1.0)  # recent models were 1 away: tau = 1.5 (clip_scale x first quartile)
    assert rule.radius() == pytest.approx(1.5)
    local = state(0.0, 100.0)
    near = rule(local, state(0.5, 100.0))  # distance 1: inside tau, a plain age-weighted step
    np.testing.assert_allclose(near.params, 0.25, rtol=1e-6)
    far = rule(local, state(50.0, 1e300))  # distance 100, claiming any age
    step = float(np.linalg.norm(far.params))
    tau = rule.radius()
    assert step <= tau * tau / 100.0 + 1e-6  # w * tau^2 / d with w < 1
    assert rule.last_clip == pytest.approx((tau / 100.0) ** 2)
    assert far.age - 100.0 <= rule.last_clip * RobustMerge().max_age_lead + 1e-9
    # the far ones do not drag the radius up while they are fewer than three quarters of the window
    for _ in range(10):
        rule(local, state(50.0, 100.0))
    assert rule.radius() == pytest.approx(1.5)  # 11 of the last 16 are far
    rule(local, state(50.0, 100.0))
    assert rule.radius() > 50  # 12 of 16: now they are the crowd


def test_zero_distances_do_not_shrink_the_radius_to_nothing():
    rule = warmed(1.0)
    for _ in range(50):
        rule(state(0.0, 1.0), state(0.0, 1.0))  # identical models: no scale information
    assert rule.radius() == pytest.approx(1.5)


def test_robust_survives_float32_extremes_without_overflow():
    """float64 arithmetic: two finite float32 extremes give a finite midpoint, where
    float32 sums overflow (the node then discards such a model as too large anyway)."""
    f32max = np.finfo(np.float32).max
    local, remote = state(float(f32max) * 0.75, 5.0), state(float(f32max), 5.0)
    with np.errstate(over="ignore"):
        assert not np.isfinite(merge_average(local, remote).params).all()
    with np.errstate(all="raise"):
        merged = RobustMerge()(local, remote)
    np.testing.assert_allclose(merged.params, float(f32max) * 0.875, rtol=1e-6)

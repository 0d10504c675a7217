"""The built-in learner: model specs, fingerprints, the hand-written SGD step against
autograd (cross-entropy and squared error), ages, learning-rate decay, scaling
applied inside the learner, accuracy on digits, regression metrics, immutability."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gossipd.core.learner import Learner, LearnerConfig, LocalData, make_learner, parse_model_spec
from gossipd.core.scaling import FeatureStats, Scaling
from gossipd.core.spec import ModelSpec, Schema
from gossipd.core.state import ModelState

SPECS = ["logreg", "mlp:16,8"]


def L(spec: str, d: int, c: int, config: LearnerConfig | None = None, **kw) -> Learner:
    """A built-in classifier on flat rows of d features and c classes."""
    return make_learner(spec, Schema.classification(d, c), config, **kw)


def R(spec: str, d: int, config: LearnerConfig | None = None, **kw) -> Learner:
    """A built-in regressor on flat rows of d features."""
    return make_learner(spec, Schema.regression(d), config, **kw)


def autograd_gradient(learner: Learner, state: ModelState, X, y, stats: FeatureStats | None = None) -> np.ndarray:
    """The reference the numpy step is checked against: the flat gradient of the mean loss
    on raw (X, y) by torch autograd through ``build_module`` (weight decay excluded):
    cross-entropy, or half the squared error of the standardised target."""
    data = LocalData.for_schema(np.asarray(X, dtype=np.float32), np.asarray(y), learner.schema)
    x, t = data.X, data.target
    st = learner.stats_for(stats)
    if st is not None:
        d = learner.n_features
        x = (x - st.shift32[:d]) * st.inv_scale32[:d]
        if learner.task == "regression":
            t = (t - st.shift32[d]) * st.inv_scale32[d]
    module = learner.build_module(state).train()
    out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    if learner.task == "classification":
        loss = F.cross_entropy(out, torch.from_numpy(data.y))
    else:
        loss = 0.5 * ((out - torch.from_numpy(t)) ** 2).sum(dim=1).mean()
    loss.backward()
    return torch.nn.utils.parameters_to_vector([p.grad for p in module.parameters()]).numpy()


def random_state(learner: Learner, seed: int, age: float = 0.0, scale: float = 0.5) -> ModelState:
    rng = np.random.default_rng(seed)
    return ModelState((rng.standard_normal(learner.n_params) * scale).astype(np.float32), age)


# ------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("logreg", ModelSpec("logreg")), (" logreg ", ModelSpec("logreg")), ("mlp:16", ModelSpec("mlp", (16,))),
     ("mlp:64,32", ModelSpec("mlp", (64, 32))), ("mlp:16,8,4", ModelSpec("mlp", (16, 8, 4))),
     ("cnn", ModelSpec("cnn", (16, 32))), ("cnn:8", ModelSpec("cnn", (8,))),
     ("python:models/net.py:make", ModelSpec("python", target="models/net.py", attr="make")),
     ("python:/abs/a:b/net.py:make_net", ModelSpec("python", target="/abs/a:b/net.py", attr="make_net")),
     ("mypkg.models:build", ModelSpec("module", target="mypkg.models", attr="build"))],
)
def test_parse_model_spec_accepts(spec, parsed):
    assert parse_model_spec(spec) == parsed
    assert parse_model_spec(parsed.text) == parsed  # the canonical text parses back


@pytest.mark.parametrize(
    "spec", ["", "mlp", "mlp:", "mlp:0", "mlp:-3", "mlp:a", "mlp:4,", "mlp:4,,2", "mlp:1.5", "logreg:3", "MLP:4",
             "cnn:", "cnn:x", "python:net.py", "python:net.txt:make", "python:net.py:1make", "pkg.mod:", "pkg mod:f",
             "mlp:make"]
)
def test_parse_model_spec_rejects(spec):
    with pytest.raises(ValueError):
        parse_model_spec(spec)


def test_learner_rejects_bad_shapes():
    with pytest.raises(ValueError):
        L("logreg", 0, 3)
    with pytest.raises(ValueError):
        L("logreg", 4, 1)
    with pytest.raises(ValueError):
        L("mlp:0", 4, 3)
    with pytest.raises(ValueError, match="SGD only"):
        L("logreg", 4, 3, LearnerConfig(optimizer="adam"))


@pytest.mark.parametrize("spec", SPECS)
def test_parameter_count_matches_torch_module(spec):
    learner = L(spec, 12, 5)
    module = learner.build_module()
    assert learner.n_params == sum(p.numel() for p in module.parameters())
    assert learner.initial_state().size == learner.n_params


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=0), dict(lr=-1), dict(lr=float("nan")), dict(lr_decay=0), dict(batch_size=0), dict(weight_decay=-1e-3)],
)
def test_learner_config_rejects(kwargs):
    with pytest.raises(ValueError):
        LearnerConfig(**kwargs)


# ------------------------------------------------------------------ fingerprint


def test_fingerprint_differs_by_spec_size_schema_and_scaling():
    fixed = Scaling.fixed(FeatureStats.fixed(np.zeros(64), np.ones(64)))
    fixed2 = Scaling.fixed(FeatureStats.fixed(np.zeros(64), np.full(64, 2.0)))
    base = L("logreg", 64, 10).fingerprint
    others = [
        L("mlp:16", 64, 10).fingerprint,
        L("mlp:16,8", 64, 10).fingerprint,
        L("mlp:8,16", 64, 10).fingerprint,
        L("logreg", 63, 10).fingerprint,
        L("logreg", 64, 9).fingerprint,
        L("mlp:16", 64, 9).fingerprint,
        make_learner("logreg", Schema.classification(64, 10, class_names=[str(9 - i) for i in range(10)])).fingerprint,
        make_learner("logreg", Schema.classification(64, 10, feature_names=[f"p{i}" for i in range(64)])).fingerprint,
        L("logreg", 64, 10, scaling=Scaling.network()).fingerprint,
        L("logreg", 64, 10, scaling=fixed).fingerprint,
        L("logreg", 64, 10, scaling=fixed2).fingerprint,
    ]
    assert len({base, *others}) == 1 + len(others)
    # One output: a classifier with 2 classes and a regressor differ too.
    assert R("logreg", 64).fingerprint not in {base, *others, L("logreg", 64, 2).fingerprint}


def test_fingerprint_is_stable():
    a = L("mlp:16,8", 64, 10)
    b = L(" mlp:16,8 ", 64, 10, LearnerConfig(lr=0.01, init_seed=7))  # training knobs are not architecture
    assert a.fingerprint == b.fingerprint
    assert isinstance(a.fingerprint, str) and len(a.fingerprint) >= 8
    # ... and the same in a fresh interpreter with different hash randomisation.
    code = ("from gossipd.core.learner import make_learner; from gossipd.core.spec import Schema; "
            "print(make_learner('mlp:16,8', Schema.classification(64, 10)).fingerprint)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == a.fingerprint


# ------------------------------------------------------------------ the SGD step against autograd


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("age", [0.0, 500.0])
def test_one_full_batch_step_matches_autograd(spec, age):
    n, d, c = 24, 12, 5
    learner = L(spec, d, c, LearnerConfig(lr=0.3, lr_decay=1000.0, batch_size=64, weight_decay=0.0))
    gen = torch.Generator().manual_seed(11)
    X = torch.randn(n, d, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    data = LocalData.from_numpy(X.numpy(), y.numpy(), c)
    state = random_state(learner, seed=3, age=age)
    lr = 0.3 / (1.0 + age / 1000.0)

    grad = autograd_gradient(learner, state, X, y)
    assert np.abs(grad).max() > 1e-3  # a real gradient, not a trivial zero
    expected = state.params - lr * grad
    new = learner.update(state, data, np.random.default_rng(0))
    np.testing.assert_allclose(new.params, expected, rtol=0, atol=1e-5)
    assert new.age == age + n


@pytest.mark.parametrize("spec", SPECS)
def test_mini_batch_pass_matches_autograd_steps(spec):
    """A pass over several mini-batches: permuted order from the given rng, lr decaying within the pass."""
    n, d, c, bs = 50, 8, 4, 16
    lr0, decay = 0.4, 40.0
    learner = L(spec, d, c, LearnerConfig(lr=lr0, lr_decay=decay, batch_size=bs, weight_decay=0.0))
    gen = torch.Generator().manual_seed(21)
    X, y = torch.randn(n, d, generator=gen), torch.randint(0, c, (n,), generator=gen)
    data = LocalData.from_numpy(X.numpy(), y.numpy(), c)
    state = random_state(learner, seed=8, age=10.0)

    order = np.random.default_rng(99).permutation(n)
    params, age = state.params.astype(np.float32), state.age
    for start in range(0, n, bs):
        idx = torch.from_numpy(order[start:start + bs])
        g = autograd_gradient(learner, ModelState(params, age), X[idx], y[idx])
        params = params - np.float32(lr0 / (1.0 + age / decay)) * g
        age += len(idx)

    new = learner.update(state, data, np.random.default_rng(99))
    np.testing.assert_allclose(new.params, params, rtol=0, atol=1e-5)
    assert new.age == state.age + n


def test_weight_decay_shrinks_weights():
    learner0 = L("logreg", 6, 3, LearnerConfig(lr=0.1, weight_decay=0.0))
    learner1 = L("logreg", 6, 3, LearnerConfig(lr=0.1, weight_decay=0.5))
    data = LocalData.from_numpy(np.zeros((4, 6), np.float32), np.array([0, 1, 2, 0]), 3)  # zero inputs: no weight gradient
    state = random_state(learner0, seed=1)
    w0 = learner0.update(state, data, np.random.default_rng(0)).params[:18]
    w1 = learner1.update(state, data, np.random.default_rng(0)).params[:18]
    np.testing.assert_allclose(w0, state.params[:18], atol=1e-7)
    np.testing.assert_allclose(w1, state.params[:18] * (1 - 0.1 * 0.5), rtol=1e-6)


# ------------------------------------------------------------------ ages, lr, divergence


@pytest.mark.parametrize(("n", "bs"), [(1, 32), (10, 32), (50, 8), (64, 32), (65, 32)])
def test_update_increases_age_by_number_of_examples(make_local_data, n, bs):
    learner = L("logreg", 4, 3, LearnerConfig(batch_size=bs))
    state = ModelState(learner.initial_state().params, 7.0)
    new = learner.update(state, make_local_data(n, 4, 3, seed=n), np.random.default_rng(0))
    assert new.age == 7.0 + n
    assert not np.array_equal(new.params, state.params)


def test_update_on_no_data_is_a_no_op(small_learner):
    empty = LocalData.from_numpy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 3)
    state = small_learner.initial_state()
    assert small_learner.update(state, empty, np.random.default_rng(0)) is state


def test_update_rejects_a_state_of_the_wrong_size(small_learner, small_data):
    with pytest.raises(ValueError):
        small_learner.update(ModelState(np.zeros(small_learner.n_params + 1, np.float32)), small_data,
                             np.random.default_rng(0))


def test_learning_rate_decays_with_age():
    lr0, decay = 0.2, 100.0
    learner = L("logreg", 8, 3, LearnerConfig(lr=lr0, lr_decay=decay, batch_size=64, weight_decay=0.0))
    rates = [learner.lr_at(a) for a in (0, 10, 100, 1000, 10**6)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert learner.lr_at(0) == pytest.approx(lr0)
    assert learner.lr_at(decay) == pytest.approx(lr0 / 2)  # documented: halved at age lr_decay

    # The step actually taken shrinks the same way: same params and data, one full batch.
    gen = torch.Generator().manual_seed(2)
    data = LocalData.from_numpy(torch.randn(20, 8, generator=gen).numpy(), np.arange(20) % 3, 3)
    base = random_state(learner, seed=5)
    young = learner.update(ModelState(base.params, 0.0), data, np.random.default_rng(0))
    old = learner.update(ModelState(base.params, 10 * decay), data, np.random.default_rng(0))
    step_young = np.linalg.norm(young.params - base.params)
    step_old = np.linalg.norm(old.params - base.params)
    assert step_young / step_old == pytest.approx(11.0, rel=1e-3)


def test_diverging_update_returns_the_input_state():
    learner = L("logreg", 4, 3, LearnerConfig(lr=1e30, weight_decay=0.0))
    X = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32) * np.float32(1e30)
    data = LocalData.from_numpy(X, np.arange(10) % 3, 3)
    state = ModelState(np.random.default_rng(1).standard_normal(learner.n_params).astype(np.float32), 5.0)
    new = learner.update(state, data, np.random.default_rng(0))
    assert np.array_equal(new.params, state.params)
    assert new.age == state.age
    assert np.isfinite(new.params).all()


# ------------------------------------------------------------------ accuracy and evaluation


def test_learns_digits(digits, digits_data):
    """Raw pixels in; the learner standardises them by the statistics it is given."""
    learner = make_learner("logreg", digits.schema, scaling=Scaling.network())
    stats = learner.initial_stats(digits_data)
    rng = np.random.default_rng(0)
    state = learner.initial_state()
    before = learner.evaluate(state, digits.X_test, digits.y_test, stats)
    for _ in range(5):
        state = learner.update(state, digits_data, rng, stats)
    after = learner.evaluate(state, digits.X_test, digits.y_test, stats)
    assert before < 0.2  # an untrained model is near chance
    assert after > 0.93
    assert state.age == 5 * len(digits.y_train)


def test_mlp_learns_digits(digits_scaled):
    digits = digits_scaled
    learner = L("mlp:32", digits.n_features, digits.n_classes)
    data = LocalData.from_numpy(digits.X_train, digits.y_train, digits.n_classes)
    rng = np.random.default_rng(0)
    state = learner.initial_state()
    for _ in range(5):
        state = learner.update(state, data, rng)
    assert learner.evaluate(state, digits.X_test, digits.y_test) > 0.9


def test_evaluate_matches_manual_argmax_logreg(digits_scaled):
    digits = digits_scaled
    d, c = digits.n_features, digits.n_classes
    learner = L("logreg", d, c)
    state = random_state(learner, seed=12, scale=0.1)
    # nn.Linear layout: the (out, in) weight matrix, row-major, then the bias.
    W = state.params[: c * d].reshape(c, d).astype(np.float64)
    b = state.params[c * d:].astype(np.float64)
    pred = np.argmax(digits.X_test.astype(np.float64) @ W.T + b, axis=1)
    manual = float(np.mean(pred == digits.y_test))
    assert 0.0 < manual < 1.0
    assert learner.evaluate(state, digits.X_test, digits.y_test) == pytest.approx(manual, abs=1e-6)
    assert learner.evaluate(state, torch.from_numpy(digits.X_test), torch.from_numpy(digits.y_test)) == \
        pytest.approx(manual, abs=1e-6)


def test_evaluate_matches_manual_argmax_mlp(digits_scaled):
    digits = digits_scaled
    learner = L("mlp:16,8", digits.n_features, digits.n_classes)
    state = random_state(learner, seed=13, scale=0.3)
    with torch.no_grad():
        pred = learner.build_module(state)(torch.from_numpy(digits.X_test)).argmax(dim=1).numpy()
    manual = float(np.mean(pred == digits.y_test))
    assert learner.evaluate(state, digits.X_test, digits.y_test) == pytest.approx(manual, abs=1e-6)


def test_evaluate_on_empty_set_is_nan(small_learner):
    acc = small_learner.evaluate(small_learner.initial_state(), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert np.isnan(acc)


@pytest.mark.parametrize("spec", SPECS)
def test_build_module_gives_same_logits(spec):
    learner = L(spec, 12, 5)
    state = random_state(learner, seed=6)
    X = torch.randn(40, 12, generator=torch.Generator().manual_seed(7))
    module = learner.build_module(state)
    assert not module.training
    with torch.no_grad():
        np.testing.assert_allclose(module(X).numpy(), learner.logits(state, X), rtol=1e-5, atol=1e-6)


def test_initial_state_is_shared_by_init_seed():
    a = L("mlp:16", 12, 5, LearnerConfig(init_seed=0)).initial_state()
    b = L("mlp:16", 12, 5, LearnerConfig(init_seed=0)).initial_state()
    c = L("mlp:16", 12, 5, LearnerConfig(init_seed=1)).initial_state()
    assert np.array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    assert a.age == 0.0
    assert np.abs(a.params).max() > 0  # an MLP must not start symmetric at zero


# ------------------------------------------------------------------ immutability


def test_model_state_params_are_read_only():
    src = np.arange(5, dtype=np.float32)
    state = ModelState(src, 1.0)
    with pytest.raises(ValueError):
        state.params[0] = 42.0
    src[0] = 42.0  # the caller's buffer is not shared
    assert state.params[0] == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.age = 2.0  # type: ignore[misc]


def test_model_state_keeps_read_only_input_without_copy():
    buf = np.arange(4, dtype=np.float32).tobytes()
    arr = np.frombuffer(buf, dtype=np.float32)
    assert ModelState(arr).params is arr


@pytest.mark.parametrize(
    ("params", "age"),
    [(np.zeros((2, 2), np.float32), 0.0), (np.zeros(3, np.float32), -1.0), (np.zeros(3, np.float32), float("nan")),
     (np.zeros(3, np.float32), float("inf"))],
)
def test_model_state_rejects(params, age):
    with pytest.raises(ValueError):
        ModelState(params, age)


@pytest.mark.parametrize("spec", SPECS)
def test_update_does_not_modify_its_input(spec, make_local_data):
    learner = L(spec, 4, 3, LearnerConfig(batch_size=4))
    state = random_state(learner, seed=9, age=3.0)
    before = state.params.copy()
    new = learner.update(state, make_local_data(20, 4, 3, seed=1), np.random.default_rng(0))
    assert np.array_equal(state.params, before)
    assert state.age == 3.0
    assert not np.shares_memory(new.params, state.params)
    with pytest.raises(ValueError):
        new.params[0] = 1.0
    # A later update must not reach back into an earlier result either.
    snapshot = new.params.copy()
    learner.update(new, make_local_data(20, 4, 3, seed=2), np.random.default_rng(1))
    assert np.array_equal(new.params, snapshot)


@pytest.mark.parametrize("spec", ["logreg", "mlp:16,8"])
def test_evaluate_many_matches_evaluate_one_by_one(digits_scaled, spec):
    digits = digits_scaled
    learner = L(spec, digits.n_features, digits.n_classes)
    rng = np.random.default_rng(11)
    data = LocalData.from_numpy(digits.X_train[:300], digits.y_train[:300], digits.n_classes)
    states = [learner.initial_state()]
    for _ in range(6):
        states.append(learner.update(states[-1], data, rng))
    states += [ModelState(rng.normal(0, 0.3, learner.n_params).astype(np.float32), 1.0) for _ in range(5)]
    many = learner.evaluate_many(states, digits.X_test, digits.y_test, chunk=4)
    one = [learner.evaluate(s, digits.X_test, digits.y_test) for s in states]
    np.testing.assert_allclose(many, one, atol=1e-6)
    assert len(set(np.round(many, 4))) > 3  # the states really differ


# ------------------------------------------------------------------ regression


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("scaled", [False, True])
def test_regression_step_matches_autograd(spec, scaled):
    """Half the mean squared error of the (standardised) target, back-propagated by hand."""
    n, d = 20, 6
    scaling = Scaling.network() if scaled else None
    learner = R(spec, d, LearnerConfig(lr=0.05, lr_decay=1000.0, batch_size=64, weight_decay=0.0), scaling=scaling)
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((n, d)) * 5 + 3).astype(np.float32)
    y = (X @ rng.standard_normal(d) * 10 + 150).astype(np.float32)
    data = LocalData.regression(X, y)
    stats = learner.initial_stats(data)
    assert (stats is not None) == scaled
    state = random_state(learner, seed=4, age=100.0, scale=0.3)
    grad = autograd_gradient(learner, state, X, y, stats)
    assert np.abs(grad).max() > 1e-3
    expected = state.params - np.float32(0.05 / (1 + 100 / 1000)) * grad
    new = learner.update(state, data, np.random.default_rng(0), stats)
    np.testing.assert_allclose(new.params, expected, rtol=0, atol=2e-5)
    assert new.age == 100.0 + n


def test_regression_reference_loss_is_half_mse_of_standardised_target():
    """The reference scales the target as the learner does (checked with float64 statistics)."""
    learner = R("mlp:8", 3, scaling=Scaling.network())
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((10, 3)).astype(np.float32), rng.standard_normal(10).astype(np.float32) * 7 + 2
    stats = learner.initial_stats(LocalData.regression(X, y))
    state = random_state(learner, seed=2)
    module = learner.build_module(state).train()
    z = torch.from_numpy((X - stats.mean[:3]) / stats.std[:3]).float()
    t = torch.from_numpy((y - stats.mean[3]) / stats.std[3]).float()
    (0.5 * F.mse_loss(module(z)[:, 0], t)).backward()
    by_module = torch.nn.utils.parameters_to_vector([p.grad for p in module.parameters()]).numpy()
    np.testing.assert_allclose(autograd_gradient(learner, state, X, y, stats), by_module, rtol=1e-5, atol=1e-6)


def test_linear_regression_learns_diabetes_like_least_squares():
    from sklearn.linear_model import LinearRegression

    from gossipd.data import load_dataset

    ds = load_dataset("diabetes")
    assert ds.task == "regression" and ds.n_features == 10
    learner = make_learner("logreg", ds.schema, LearnerConfig.for_task("regression"), scaling=Scaling.network())
    data = LocalData.for_schema(ds.X_train, ds.y_train, ds.schema)
    stats = learner.initial_stats(data)
    rng = np.random.default_rng(0)
    state = learner.initial_state()
    for _ in range(30):
        state = learner.update(state, data, rng, stats)
    scores = learner.scores(state, ds.X_test, ds.y_test, stats)
    ols = LinearRegression().fit(ds.X_train, ds.y_train).predict(ds.X_test)
    ols_rmse = float(np.sqrt(np.mean((ols - ds.y_test) ** 2)))
    assert scores["rmse"] <= 1.03 * ols_rmse
    assert 0.3 < scores["r2"] < 0.6  # diabetes: linear models explain about 0.4 of the variance
    assert learner.evaluate(state, ds.X_test, ds.y_test, stats) == pytest.approx(scores["rmse"])


def test_regression_metrics_match_numpy():
    learner = R("logreg", 3)
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((40, 3)).astype(np.float32), rng.standard_normal(40).astype(np.float32)
    state = random_state(learner, seed=6)
    pred = learner.predict(state, X)
    W, b = state.params[:3].astype(np.float64), float(state.params[3])
    np.testing.assert_allclose(pred, X.astype(np.float64) @ W + b, rtol=1e-5, atol=1e-5)
    err = pred.astype(np.float64) - y
    scores = learner.scores(state, X, y)
    assert scores["rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-6)
    assert scores["r2"] == pytest.approx(1 - np.sum(err ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-6)
    np.testing.assert_allclose(learner.outputs(state, X), pred)


# ------------------------------------------------------------------ scaling inside the learner


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("spec", SPECS)
def test_scaling_in_the_learner_equals_training_on_standardised_data(task, spec):
    """Raw data + stats gives the same parameters as pre-standardised data without scaling,
    and the raw-space outputs agree (regression: de-standardised)."""
    rng = np.random.default_rng(7)
    n, d = 50, 5
    X = (rng.standard_normal((n, d)) * [1, 10, 100, 0.1, 3] + [5, -3, 200, 0, 1]).astype(np.float32)
    if task == "classification":
        schema, y = Schema.classification(d, 3), rng.integers(0, 3, n)
        data = LocalData.from_numpy(X, y, 3)
    else:
        schema, y = Schema.regression(d), (X[:, 0] * 30 + 100).astype(np.float32)
        data = LocalData.regression(X, y)
    config = LearnerConfig(lr=0.1, batch_size=16)
    scaled = make_learner(spec, schema, config, scaling=Scaling.network())
    plain = make_learner(spec, schema, config)
    stats = scaled.initial_stats(data)
    cols = (data.columns() - stats.mean) / stats.std
    z = cols[:, :d].astype(np.float32)
    zdata = (LocalData.from_numpy(z, y, 3) if task == "classification"
             else LocalData.regression(z, cols[:, d].astype(np.float32)))
    a = scaled.update(scaled.initial_state(), data, np.random.default_rng(1), stats)
    b = plain.update(plain.initial_state(), zdata, np.random.default_rng(1))
    np.testing.assert_allclose(a.params, b.params, rtol=1e-4, atol=1e-5)
    out_a = scaled.outputs(a, X, stats)
    out_b = plain.outputs(b, z)
    if task == "regression":
        out_b = out_b * stats.std[d] + stats.mean[d]
    np.testing.assert_allclose(out_a, out_b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_evaluate_many_with_per_model_stats_matches_one_by_one(task):
    """The batched path folds each model's own scaling into its first layer."""
    rng = np.random.default_rng(8)
    d = 6
    schema = Schema.classification(d, 4) if task == "classification" else Schema.regression(d)
    learner = make_learner("mlp:8", schema, scaling=Scaling.network())
    X = (rng.standard_normal((60, d)) * 4 + 2).astype(np.float32)
    y = rng.integers(0, 4, 60) if task == "classification" else (X.sum(axis=1) * 3).astype(np.float32)
    states, stats = [], []
    for i in range(7):
        states.append(random_state(learner, seed=i, scale=0.4))
        part = X[rng.choice(60, 15, replace=False)]
        cols = part if task == "classification" else np.hstack([part, rng.standard_normal((15, 1)) * 5 + i])
        stats.append(FeatureStats.of(cols))
    many = learner.scores_many(states, X, y, stats, chunk=3)
    for i, (s, st) in enumerate(zip(states, stats)):
        one = learner.scores(s, X, y, st)
        for m in learner.metrics:
            assert many[m][i] == pytest.approx(one[m], rel=1e-5, abs=1e-6), (m, i)
    first = learner.metrics[0]
    assert len(set(np.round(many[first], 5))) > 3  # the models (and their scalings) really differ


def test_network_scaling_needs_the_nodes_stats():
    learner = L("logreg", 4, 3, scaling=Scaling.network())
    data = LocalData.from_numpy(np.ones((5, 4), np.float32), np.arange(5) % 3, 3)
    with pytest.raises(ValueError, match="pass the node's stats"):
        learner.update(learner.initial_state(), data, np.random.default_rng(0))
    with pytest.raises(ValueError, match="columns"):
        learner.evaluate(learner.initial_state(), data.X, data.y, FeatureStats.of(np.ones((3, 5))))
    # A learner without scaling ignores statistics; fixed scaling uses its own.
    fixed = FeatureStats.fixed(np.full(4, 1.0), np.full(4, 2.0))
    assert L("logreg", 4, 3).stats_for(FeatureStats.of(np.ones((3, 4)))) is None
    assert L("logreg", 4, 3, scaling=Scaling.fixed(fixed)).stats_for(None) is fixed
    with pytest.raises(ValueError, match="fixed scaling"):
        L("logreg", 5, 3, scaling=Scaling.fixed(fixed))


# ------------------------------------------------------------------ the numpy maths over many models


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_linear_maths_batched_over_models_equals_one_by_one(task):
    """linear_maths works on a leading model axis: one batched step (a learning rate per
    model) gives each model what its own step gives, and so does the batched forward."""
    from gossipd.core import linear_maths as lm

    rng = np.random.default_rng(30)
    shapes = lm.layer_shapes((5, 7, 4, 3 if task == "classification" else 1))
    B, n = 4, 9
    flat = rng.standard_normal((B, lm.n_params(shapes))).astype(np.float32) * 0.5
    x = rng.standard_normal((B, n, 5)).astype(np.float32)
    if task == "classification":
        target = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (B, n))]
    else:
        target = rng.standard_normal((B, n, 1)).astype(np.float32)
    lr = np.array([0.1, 0.2, 0.05, 0.3], np.float32)
    np.testing.assert_allclose(lm.forward(x, lm.layer_views(flat, shapes)),
                               np.stack([lm.forward(x[k], lm.layer_views(flat[k], shapes)) for k in range(B)]),
                               rtol=1e-5, atol=1e-6)
    one = flat.copy()
    for k in range(B):
        lm.sgd_step(lm.layer_views(one[k], shapes), x[k], target[k], float(lr[k]), 0.01, task == "classification")
    many = flat.copy()
    lm.sgd_step(lm.layer_views(many, shapes), x, target, lr, 0.01, task == "classification")
    assert not np.allclose(many, flat)
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)

"""The learner: model specs, fingerprints, the hand-written SGD step against
autograd, ages, learning-rate decay, accuracy on digits and immutability."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gossipd.core.learner import Learner, LearnerConfig, LocalData, parse_model_spec
from gossipd.core.state import ModelState

SPECS = ["logreg", "mlp:16,8"]


def random_state(learner: Learner, seed: int, age: float = 0.0, scale: float = 0.5) -> ModelState:
    rng = np.random.default_rng(seed)
    return ModelState((rng.standard_normal(learner.n_params) * scale).astype(np.float32), age)


# ------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    ("spec", "hidden"),
    [("logreg", ()), (" logreg ", ()), ("mlp:16", (16,)), ("mlp:64,32", (64, 32)), ("mlp:16,8,4", (16, 8, 4))],
)
def test_parse_model_spec_accepts(spec, hidden):
    assert parse_model_spec(spec) == hidden


@pytest.mark.parametrize(
    "spec", ["", "cnn", "mlp", "mlp:", "mlp:0", "mlp:-3", "mlp:a", "mlp:4,", "mlp:4,,2", "mlp:1.5", "logreg:3", "MLP:4"]
)
def test_parse_model_spec_rejects(spec):
    with pytest.raises(ValueError):
        parse_model_spec(spec)


def test_learner_rejects_bad_shapes():
    with pytest.raises(ValueError):
        Learner("logreg", 0, 3)
    with pytest.raises(ValueError):
        Learner("logreg", 4, 1)
    with pytest.raises(ValueError):
        Learner("mlp:0", 4, 3)


@pytest.mark.parametrize("spec", SPECS)
def test_parameter_count_matches_torch_module(spec):
    learner = Learner(spec, 12, 5)
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


def test_fingerprint_differs_by_spec_and_size():
    base = Learner("logreg", 64, 10).fingerprint
    others = [
        Learner("mlp:16", 64, 10).fingerprint,
        Learner("mlp:16,8", 64, 10).fingerprint,
        Learner("mlp:8,16", 64, 10).fingerprint,
        Learner("logreg", 63, 10).fingerprint,
        Learner("logreg", 64, 9).fingerprint,
        Learner("mlp:16", 64, 9).fingerprint,
    ]
    assert len({base, *others}) == 1 + len(others)


def test_fingerprint_is_stable():
    a = Learner("mlp:16,8", 64, 10)
    b = Learner(" mlp:16,8 ", 64, 10, LearnerConfig(lr=0.01, init_seed=7))  # training knobs are not architecture
    assert a.fingerprint == b.fingerprint
    assert isinstance(a.fingerprint, str) and len(a.fingerprint) >= 8
    # ... and the same in a fresh interpreter with different hash randomisation.
    code = "from gossipd.core.learner import Learner; print(Learner('mlp:16,8', 64, 10).fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == a.fingerprint


# ------------------------------------------------------------------ the SGD step against autograd


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("age", [0.0, 500.0])
def test_one_full_batch_step_matches_autograd(spec, age):
    n, d, c = 24, 12, 5
    learner = Learner(spec, d, c, LearnerConfig(lr=0.3, lr_decay=1000.0, batch_size=64, weight_decay=0.0))
    gen = torch.Generator().manual_seed(11)
    X = torch.randn(n, d, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    data = LocalData.from_numpy(X.numpy(), y.numpy(), c)
    state = random_state(learner, seed=3, age=age)
    lr = 0.3 / (1.0 + age / 1000.0)

    grad = learner.loss_gradient(state, X, y)
    assert np.abs(grad).max() > 1e-3  # a real gradient, not a trivial zero
    expected = state.params - lr * grad
    new = learner.update(state, data, np.random.default_rng(0))
    np.testing.assert_allclose(new.params, expected, rtol=0, atol=1e-5)
    assert new.age == age + n


def test_autograd_reference_is_the_mean_cross_entropy_gradient():
    """loss_gradient is the reference for the step test; check it against a torch.nn module."""
    learner = Learner("mlp:16,8", 12, 5)
    state = random_state(learner, seed=4)
    gen = torch.Generator().manual_seed(5)
    X, y = torch.randn(30, 12, generator=gen), torch.randint(0, 5, (30,), generator=gen)
    module = learner.build_module(state).train()
    F.cross_entropy(module(X), y).backward()
    by_module = torch.nn.utils.parameters_to_vector([p.grad for p in module.parameters()]).numpy()
    np.testing.assert_allclose(learner.loss_gradient(state, X, y), by_module, rtol=0, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS)
def test_mini_batch_pass_matches_autograd_steps(spec):
    """A pass over several mini-batches: permuted order from the given rng, lr decaying within the pass."""
    n, d, c, bs = 50, 8, 4, 16
    lr0, decay = 0.4, 40.0
    learner = Learner(spec, d, c, LearnerConfig(lr=lr0, lr_decay=decay, batch_size=bs, weight_decay=0.0))
    gen = torch.Generator().manual_seed(21)
    X, y = torch.randn(n, d, generator=gen), torch.randint(0, c, (n,), generator=gen)
    data = LocalData.from_numpy(X.numpy(), y.numpy(), c)
    state = random_state(learner, seed=8, age=10.0)

    order = np.random.default_rng(99).permutation(n)
    params, age = state.params.astype(np.float32), state.age
    for start in range(0, n, bs):
        idx = torch.from_numpy(order[start:start + bs])
        g = learner.loss_gradient(ModelState(params, age), X[idx], y[idx])
        params = params - np.float32(lr0 / (1.0 + age / decay)) * g
        age += len(idx)

    new = learner.update(state, data, np.random.default_rng(99))
    np.testing.assert_allclose(new.params, params, rtol=0, atol=1e-5)
    assert new.age == state.age + n


def test_weight_decay_shrinks_weights():
    learner0 = Learner("logreg", 6, 3, LearnerConfig(lr=0.1, weight_decay=0.0))
    learner1 = Learner("logreg", 6, 3, LearnerConfig(lr=0.1, weight_decay=0.5))
    data = LocalData.from_numpy(np.zeros((4, 6), np.float32), np.array([0, 1, 2, 0]), 3)  # zero inputs: no weight gradient
    state = random_state(learner0, seed=1)
    w0 = learner0.update(state, data, np.random.default_rng(0)).params[:18]
    w1 = learner1.update(state, data, np.random.default_rng(0)).params[:18]
    np.testing.assert_allclose(w0, state.params[:18], atol=1e-7)
    np.testing.assert_allclose(w1, state.params[:18] * (1 - 0.1 * 0.5), rtol=1e-6)


# ------------------------------------------------------------------ ages, lr, divergence


@pytest.mark.parametrize(("n", "bs"), [(1, 32), (10, 32), (50, 8), (64, 32), (65, 32)])
def test_update_increases_age_by_number_of_examples(make_local_data, n, bs):
    learner = Learner("logreg", 4, 3, LearnerConfig(batch_size=bs))
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
    learner = Learner("logreg", 8, 3, LearnerConfig(lr=lr0, lr_decay=decay, batch_size=64, weight_decay=0.0))
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
    learner = Learner("logreg", 4, 3, LearnerConfig(lr=1e30, weight_decay=0.0))
    X = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32) * np.float32(1e30)
    data = LocalData.from_numpy(X, np.arange(10) % 3, 3)
    state = ModelState(np.random.default_rng(1).standard_normal(learner.n_params).astype(np.float32), 5.0)
    new = learner.update(state, data, np.random.default_rng(0))
    assert np.array_equal(new.params, state.params)
    assert new.age == state.age
    assert np.isfinite(new.params).all()


# ------------------------------------------------------------------ accuracy and evaluation


def test_learns_digits(digits, digits_data):
    learner = Learner("logreg", digits.n_features, digits.n_classes)
    rng = np.random.default_rng(0)
    state = learner.initial_state()
    before = learner.evaluate(state, digits.X_test, digits.y_test)
    for _ in range(5):
        state = learner.update(state, digits_data, rng)
    after = learner.evaluate(state, digits.X_test, digits.y_test)
    assert before < 0.2  # an untrained model is near chance
    assert after > 0.93
    assert state.age == 5 * len(digits.y_train)


def test_mlp_learns_digits(digits, digits_data):
    learner = Learner("mlp:32", digits.n_features, digits.n_classes)
    rng = np.random.default_rng(0)
    state = learner.initial_state()
    for _ in range(5):
        state = learner.update(state, digits_data, rng)
    assert learner.evaluate(state, digits.X_test, digits.y_test) > 0.9


def test_evaluate_matches_manual_argmax_logreg(digits):
    d, c = digits.n_features, digits.n_classes
    learner = Learner("logreg", d, c)
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


def test_evaluate_matches_manual_argmax_mlp(digits):
    learner = Learner("mlp:16,8", digits.n_features, digits.n_classes)
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
    learner = Learner(spec, 12, 5)
    state = random_state(learner, seed=6)
    X = torch.randn(40, 12, generator=torch.Generator().manual_seed(7))
    module = learner.build_module(state)
    assert not module.training
    with torch.no_grad():
        np.testing.assert_allclose(module(X).numpy(), learner.logits(state, X).numpy(), rtol=1e-5, atol=1e-6)


def test_initial_state_is_shared_by_init_seed():
    a = Learner("mlp:16", 12, 5, LearnerConfig(init_seed=0)).initial_state()
    b = Learner("mlp:16", 12, 5, LearnerConfig(init_seed=0)).initial_state()
    c = Learner("mlp:16", 12, 5, LearnerConfig(init_seed=1)).initial_state()
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
    learner = Learner(spec, 4, 3, LearnerConfig(batch_size=4))
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
def test_evaluate_many_matches_evaluate_one_by_one(digits, spec):
    learner = Learner(spec, digits.n_features, digits.n_classes)
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

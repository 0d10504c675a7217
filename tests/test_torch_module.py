"""Any torch module as a gossip model: plugins loaded from a file or a module, the
autograd path against the hand-written one, buffers, randomness, optimisers, the
built-in cnn, and every way a plugin can be wrong."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from gossipd.core.learner import LearnerConfig, LocalData, make_learner
from gossipd.core.plugin import PluginError
from gossipd.core.scaling import Scaling
from gossipd.core.spec import Schema
from gossipd.core.state import ModelState
from gossipd.core.torch_module import ModuleLearner

MLP_PLUGIN = """
from torch import nn

def make(schema):
    # The same Linear/ReLU stack as the built-in mlp:16, layer for layer.
    return nn.Sequential(nn.Linear(schema.n_features, 16), nn.ReLU(), nn.Linear(16, schema.n_outputs))
"""


def plugin(tmp_path: Path, source: str, name: str = "plugin.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def data_for(schema: Schema, n: int = 40, seed: int = 0) -> LocalData:
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, schema.n_features)) * 3 + 1).astype(np.float32)
    if schema.task == "regression":
        return LocalData.regression(X, (X[:, 0] * 5 + 2).astype(np.float32))
    return LocalData.from_numpy(X, rng.integers(0, schema.n_outputs, n), schema.n_outputs)


# ------------------------------------------------------------------ autograd = hand-written


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("scaled", [False, True])
def test_module_path_matches_the_hand_written_path(tmp_path, task, scaled):
    """The same MLP, trained by autograd over flat views and by hand, step for step."""
    schema = Schema.classification(6, 3) if task == "classification" else Schema.regression(6)
    config = LearnerConfig(lr=0.05, batch_size=8, weight_decay=0.0)
    scaling = Scaling.network() if scaled else None
    torch_path = make_learner(f"python:{plugin(tmp_path, MLP_PLUGIN)}:make", schema, config, scaling=scaling)
    by_hand = make_learner("mlp:16", schema, config, scaling=scaling)
    assert isinstance(torch_path, ModuleLearner)
    assert torch_path.n_params == by_hand.n_params
    data = data_for(schema)
    stats = by_hand.initial_stats(data)
    state = by_hand.initial_state()
    a = torch_path.update(state, data, np.random.default_rng(5), stats)
    b = by_hand.update(state, data, np.random.default_rng(5), stats)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-4, atol=1e-5)
    assert a.age == b.age == len(data)
    X = data.X[:10]
    np.testing.assert_allclose(torch_path.outputs(a, X, stats), by_hand.outputs(b, X, stats), rtol=1e-4, atol=1e-5)
    y = data.y
    assert torch_path.scores(a, data.X, y, stats) == pytest.approx(by_hand.scores(b, data.X, y, stats), rel=1e-4)


def test_initial_parameters_are_the_modules_own_and_shared_by_init_seed(tmp_path):
    spec = f"python:{plugin(tmp_path, MLP_PLUGIN)}:make"
    schema = Schema.classification(5, 2)
    a = make_learner(spec, schema, LearnerConfig(init_seed=3)).initial_state()
    b = make_learner(spec, schema, LearnerConfig(init_seed=3)).initial_state()
    c = make_learner(spec, schema, LearnerConfig(init_seed=4)).initial_state()
    assert np.array_equal(a.params, b.params) and not np.array_equal(a.params, c.params)
    # nn.Linear's own initialisation: uniform within 1/sqrt(fan_in), not zeros.
    assert np.abs(a.params[:80]).max() <= float(1 / np.sqrt(5)) + 1e-6 and np.abs(a.params).max() > 0


def test_fingerprint_covers_structure_not_the_path(tmp_path):
    schema = Schema.classification(5, 2)
    one = make_learner(f"python:{plugin(tmp_path, MLP_PLUGIN)}:make", schema)
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    two = make_learner(f"python:{plugin(other_dir, MLP_PLUGIN)}:make", schema)
    assert one.fingerprint == two.fingerprint  # the same module on another machine's path
    wider = plugin(tmp_path, MLP_PLUGIN.replace("16", "17"), "wider.py")
    assert make_learner(f"python:{wider}:make", schema).fingerprint != one.fingerprint
    named = plugin(tmp_path, """
        from torch import nn

        class Net(nn.Module):
            def __init__(self, d, k):
                super().__init__()
                self.hidden, self.out = nn.Linear(d, 16), nn.Linear(16, k)
            def forward(self, x):
                return self.out(self.hidden(x).relu())

        def make(schema):
            return Net(schema.n_features, schema.n_outputs)
        """, "named.py")
    renamed = make_learner(f"python:{named}:make", schema)
    assert renamed.n_params == one.n_params and renamed.fingerprint != one.fingerprint
    assert make_learner(f"python:{named}:make", Schema.regression(5)).fingerprint != renamed.fingerprint


def test_module_form_imports_a_package_module(tmp_path, monkeypatch):
    pkg = tmp_path / "fleetmodels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(MLP_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    learner = make_learner("fleetmodels.nets:make", Schema.classification(4, 3))
    assert learner.spec == "fleetmodels.nets:make" and learner.n_params == 4 * 16 + 16 + 16 * 3 + 3


# ------------------------------------------------------------------ buffers, randomness, optimisers


BN_PLUGIN = """
from torch import nn

def make(schema):
    return nn.Sequential(nn.Linear(schema.n_features, 8), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Dropout(0.3), nn.Linear(8, schema.n_outputs))
"""


def test_batchnorm_running_statistics_travel_and_merge_with_the_parameters(tmp_path):
    schema = Schema.classification(6, 3)
    learner = make_learner(f"python:{plugin(tmp_path, BN_PLUGIN)}:make", schema, LearnerConfig(lr=0.1, batch_size=8))
    trainable = 6 * 8 + 8 + 8 + 8 + 8 * 3 + 3  # Linear, BatchNorm weight and bias, Linear
    assert learner.n_trainable == trainable
    assert learner.n_params == trainable + 8 + 8  # running mean and var; num_batches_tracked stays local
    state = learner.initial_state()
    buffers0 = state.params[trainable:].copy()
    np.testing.assert_array_equal(buffers0, np.r_[np.zeros(8), np.ones(8)])
    new = learner.update(state, data_for(schema), np.random.default_rng(0))
    assert not np.allclose(new.params[trainable:], buffers0)  # training moved the running statistics
    # Evaluation uses the running statistics of the state it is given (eval mode).
    module = learner.build_module(new)
    X = data_for(schema, seed=1).X
    with torch.no_grad():
        np.testing.assert_allclose(learner.logits(new, X), module(torch.from_numpy(X)).numpy(), rtol=1e-5,
                                   atol=1e-6)
    changed = ModelState(np.r_[new.params[:trainable], new.params[trainable:] * 2], new.age)
    assert not np.allclose(learner.logits(changed, X), learner.logits(new, X))


def test_dropout_is_seeded_by_the_node_and_leaves_global_randomness_alone(tmp_path):
    learner = make_learner(f"python:{plugin(tmp_path, BN_PLUGIN)}:make", Schema.classification(6, 3))
    data = data_for(learner.schema)
    state = learner.initial_state()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = learner.update(state, data, np.random.default_rng(9))
    b = learner.update(state, data, np.random.default_rng(9))
    c = learner.update(state, data, np.random.default_rng(10))
    assert torch.equal(torch.get_rng_state(), before)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)


def test_adam_optimizer_and_a_custom_loss(tmp_path):
    schema = Schema.regression(4)
    spec = f"python:{plugin(tmp_path, MLP_PLUGIN)}:make"
    data = data_for(schema, n=64)
    sgd = make_learner(spec, schema, LearnerConfig(lr=0.01, batch_size=16), scaling=Scaling.network())
    adam = make_learner(spec, schema, LearnerConfig(lr=0.01, batch_size=16, optimizer="adam"),
                        scaling=Scaling.network())
    stats = sgd.initial_stats(data)
    s0 = sgd.initial_state()
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    a, b = s0, s0
    for _ in range(20):
        a, b = sgd.update(a, data, rng_a, stats), adam.update(b, data, rng_b, stats)
    assert not np.allclose(a.params, b.params)
    start = sgd.scores(s0, data.X, data.y, stats)["rmse"]
    assert adam.scores(b, data.X, data.y, stats)["rmse"] < 0.5 * start

    zero_loss = plugin(tmp_path, MLP_PLUGIN + """
def make_with_loss(schema):
    return make(schema), lambda out, target: (out * 0).sum()
""", "zero.py")
    learner = make_learner(f"python:{zero_loss}:make_with_loss", schema, LearnerConfig(weight_decay=0.0))
    s = learner.initial_state()
    np.testing.assert_array_equal(learner.update(s, data, np.random.default_rng(0)).params, s.params)


# ------------------------------------------------------------------ the built-in cnn


def test_builtin_cnn_needs_images_and_learns_digits(digits):
    with pytest.raises(ValueError, match="image-shaped"):
        make_learner("cnn", Schema.classification(64, 10))
    assert digits.schema.input_shape == (1, 8, 8)
    learner = make_learner("cnn:8,16", digits.schema, LearnerConfig(lr=0.3), scaling=Scaling.network())
    data = LocalData.from_numpy(digits.X_train[:400], digits.y_train[:400], 10)
    stats = learner.initial_stats(data)
    state, rng = learner.initial_state(), np.random.default_rng(0)
    for _ in range(6):
        state = learner.update(state, data, rng, stats)
    assert learner.evaluate(state, digits.X_test, digits.y_test, stats) > 0.85


# ------------------------------------------------------------------ plugins that are wrong


@pytest.mark.parametrize(("source", "attr", "fragment"), [
    (None, "make", "not found"),
    ("raise RuntimeError('boom')", "make", "importing"),
    ("x = 1", "make", "has no function 'make'"),
    ("make = 3", "make", "not callable"),
    ("def make(schema):\n    raise KeyError('wide')", "make", "factory failed: KeyError"),
    ("def make(schema):\n    return 'a module'", "make", "must return a torch.nn.Module"),
    ("from torch import nn\ndef make(schema):\n    return nn.Linear(schema.n_features, 7)", "make",
     "output has shape (2, 7)"),
    ("from torch import nn\ndef make(schema):\n    return nn.Linear(3, 2)", "make", "forward on a batch"),
    ("from torch import nn\ndef make(schema):\n    return nn.Sequential(nn.Linear(schema.n_features, 2), "
     "nn.BatchNorm1d(2, momentum=None))", "make", "momentum=None"),
    ("from torch import nn\ndef make(schema):\n    return nn.ReLU()", "make", "no parameters"),
    ("from torch import nn\ndef make(schema):\n    return nn.Linear(schema.n_features, 2), 5", "make",
     "loss the factory returned is not callable"),
])
def test_plugin_errors_name_the_file_and_the_problem(tmp_path, source, attr, fragment):
    path = tmp_path / "bad_model.py"
    if source is not None:
        path.write_text(source + "\n")
    spec = f"python:{path}:{attr}"
    with pytest.raises(PluginError) as info:
        make_learner(spec, Schema.classification(4, 2))
    message = str(info.value)
    assert fragment in message and "bad_model.py" in message, message


def test_module_form_errors():
    with pytest.raises(PluginError, match=r"cannot import module 'no_such_pkg_gossipd\.nets'"):
        make_learner("no_such_pkg_gossipd.nets:make", Schema.classification(4, 2))
    with pytest.raises(PluginError, match="has no function 'nope'"):
        make_learner("json:nope", Schema.classification(4, 2))


def test_batchnorm_module_trains_when_one_example_is_left_over(tmp_path):
    """33 examples in batches of 32: the single last one joins the previous batch."""
    schema = Schema.classification(6, 3)
    learner = make_learner(f"python:{plugin(tmp_path, BN_PLUGIN)}:make", schema, LearnerConfig(batch_size=32))
    new = learner.update(learner.initial_state(), data_for(schema, n=33), np.random.default_rng(0))
    assert new.age == 33 and np.isfinite(new.params).all()

"""ONNX export: real torch exporter, real onnxruntime, real data. The file takes raw
features and answers labels and probabilities (or values); scaling is in the graph."""

from __future__ import annotations

import importlib.metadata
import json
import threading
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gossipd.core.learner import Learner, LearnerConfig, LocalData, make_learner
from gossipd.core.scaling import FeatureStats, Scaling
from gossipd.core.spec import Schema
from gossipd.core.state import ModelState
from gossipd.data import load_dataset
from gossipd.export import (
    DEFAULT_OPSET,
    ExportError,
    ExportReport,
    export_onnx,
    export_onnx_bytes,
    label_values,
    read_metadata,
    run_onnx,
    score_onnx,
    signature,
    signature_text,
)

SPECS = ("logreg", "mlp:32,16")
PASSES = 3


def _train(learner: Learner, data: LocalData, stats: FeatureStats | None, passes: int, seed: int) -> ModelState:
    rng = np.random.default_rng(seed)
    state = learner.initial_state()
    for _ in range(passes):
        state = learner.update(state, data, rng, stats)
    return state


@pytest.fixture(scope="module", params=SPECS)
def trained(request, digits):
    learner = make_learner(request.param, digits.schema, scaling=Scaling.network())
    data = LocalData.for_schema(digits.X_train, digits.y_train, digits.schema)
    stats = learner.initial_stats(data)
    state = _train(learner, data, stats, PASSES, seed=7)
    assert state.age == PASSES * len(data)
    return learner, state, stats


def _session(path_or_bytes) -> ort.InferenceSession:
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def test_export_takes_raw_features_and_answers_labels(trained, digits, tmp_path):
    learner, state, stats = trained
    path = tmp_path / "model.onnx"
    report = export_onnx(learner, state, path, stats=stats, check_X=digits.X_test,
                         metadata={"gossipd.node_id": "node-a"})
    assert isinstance(report, ExportReport)
    assert report.path == path
    assert report.bytes == path.stat().st_size > 0
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-5
    assert report.n_checked == len(digits.X_test)
    assert report.opset == DEFAULT_OPSET

    # A fresh session on the file, independent of the exporter's own check, on RAW pixels.
    sess = _session(path)
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    label, probs = sess.run(None, {"input": digits.X_test})
    assert label.dtype == np.int64 and probs.shape == (len(digits.X_test), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    own = learner.predict(state, digits.X_test, stats)
    np.testing.assert_array_equal(label, own)  # digits' class names are 0..9
    np.testing.assert_allclose(probs, learner.outputs(state, digits.X_test, stats), atol=1e-5)
    acc = learner.evaluate(state, digits.X_test, digits.y_test, stats)
    assert acc > 0.9
    assert score_onnx(path, digits.X_test, digits.y_test) == pytest.approx(acc)
    assert score_onnx(path.read_bytes(), digits.X_test, digits.y_test) == pytest.approx(acc)
    # The scaling is in the graph: Sub and Mul on the input before the first layer.
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops[:2] == ["Sub", "Mul"] and "Gather" in ops


def test_metadata_says_what_to_feed_and_what_comes_out(trained, digits, tmp_path):
    learner, state, stats = trained
    path = tmp_path / "model.onnx"
    report = export_onnx(learner, state, path, stats=stats, metadata={"gossipd.node_id": "node-a"})
    assert report.max_abs_diff is None and report.n_checked == 0
    meta = read_metadata(path)
    assert meta == report.metadata
    assert float(meta["gossipd.age"]) == state.age
    assert meta["gossipd.fingerprint"] == learner.fingerprint
    assert meta["gossipd.spec"] == learner.spec
    assert meta["gossipd.version"] == importlib.metadata.version("gossipd")
    assert meta["gossipd.node_id"] == "node-a"
    assert meta["gossipd.task"] == "classification"
    assert json.loads(meta["gossipd.class_names"]) == [str(i) for i in range(10)]
    assert json.loads(meta["gossipd.feature_names"]) == list(digits.schema.feature_names)
    assert len(json.loads(meta["gossipd.feature_names"])) == 64
    assert json.loads(meta["gossipd.input_shape"]) == [1, 8, 8]
    scaling = json.loads(meta["gossipd.scaling"])
    assert scaling["mode"] == "network" and scaling["count"] == stats.count
    np.testing.assert_allclose(scaling["feature_mean"], stats.mean)
    np.testing.assert_allclose(scaling["feature_std"], stats.std)
    # The same through onnxruntime's view of the file.
    custom = _session(path).get_modelmeta().custom_metadata_map
    assert custom["gossipd.fingerprint"] == learner.fingerprint
    sig = signature(path)
    assert signature_text(sig) == ("input float32 [batch, 64] -> label int64 [batch], "
                                   "probabilities float32 [batch, 10]")
    assert onnx.load(path).graph.doc_string == signature_text(sig)


def test_metadata_cannot_override_reserved_keys(trained):
    learner, state, stats = trained
    for key in ("gossipd.age", "gossipd.scaling", "gossipd.task"):
        with pytest.raises(ValueError, match=key):
            export_onnx_bytes(learner, state, stats=stats, metadata={key: "0"})


@pytest.mark.parametrize("batch", [1, 7])
def test_dynamic_batch(trained, digits, tmp_path, batch):
    learner, state, stats = trained
    path = tmp_path / "model.onnx"
    export_onnx(learner, state, path, stats=stats)
    model = onnx.load(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # symbolic batch
    assert dims[1].dim_value == digits.n_features
    X = digits.X_test[:batch]
    out = run_onnx(path, X)
    assert out["label"].shape == (batch,) and out["probabilities"].shape == (batch, digits.n_classes)
    np.testing.assert_allclose(out["probabilities"], learner.outputs(state, X, stats), rtol=0, atol=1e-5)


def test_bytes_is_the_same_loadable_model(trained, digits, tmp_path):
    learner, state, stats = trained
    data = export_onnx_bytes(learner, state, stats=stats, check_X=digits.X_test, metadata={"gossipd.node_id": "n"})
    assert isinstance(data, bytes)
    onnx.checker.check_model(onnx.load_from_string(data))
    assert read_metadata(data)["gossipd.fingerprint"] == learner.fingerprint
    # The HTTP endpoint and the file export produce the same artifact.
    path = tmp_path / "model.onnx"
    export_onnx(learner, state, path, stats=stats, metadata={"gossipd.node_id": "n"})
    assert path.read_bytes() == data


def test_atomic_write_leaves_only_the_file(trained, digits, tmp_path):
    learner, state, stats = trained
    path = tmp_path / "model.onnx"
    export_onnx(learner, state, path, stats=stats, check_X=digits.X_test)
    export_onnx(learner, state, str(path), stats=stats, check_X=digits.X_test)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_check_writes_nothing(trained, digits, tmp_path, monkeypatch):
    learner, state, stats = trained
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    real = learner.outputs
    monkeypatch.setattr(learner, "outputs", lambda s, X, st=None: real(s, X, st) + 1e-3)
    with pytest.raises(ExportError, match=r"differ by up to 0\.001"):
        export_onnx(learner, state, path, stats=stats, check_X=digits.X_test)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_bad_inputs_raise_before_any_work(trained, digits, tmp_path):
    learner, state, stats = trained
    path = tmp_path / "model.onnx"
    bad = ModelState(np.zeros(learner.n_params + 1, dtype=np.float32), 5.0)
    with pytest.raises(ValueError, match="parameters"):
        export_onnx(learner, bad, path, stats=stats)
    with pytest.raises(ValueError, match="parameters"):
        export_onnx_bytes(learner, bad, stats=stats)
    with pytest.raises(ValueError, match="check_X"):
        export_onnx_bytes(learner, state, stats=stats, check_X=digits.X_test[:, :5])
    with pytest.raises(ValueError, match="stats"):  # network scaling: the node's statistics are part of the model
        export_onnx_bytes(learner, state)
    assert list(tmp_path.iterdir()) == []


def test_export_is_quiet(trained, digits, capfd):
    learner, state, stats = trained
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx_bytes(learner, state, stats=stats, check_X=digits.X_test)
    assert [str(w.message) for w in caught] == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_export_while_training_in_another_thread(digits):
    """The daemon exports from one thread while a worker thread trains."""
    learner = make_learner("mlp:32,16", digits.schema, scaling=Scaling.network())
    data = LocalData.for_schema(digits.X_train, digits.y_train, digits.schema)
    stats = learner.initial_stats(data)
    start = _train(learner, data, stats, 1, seed=3)
    passes = 40  # long enough for several exports to overlap it (not asserted: no timing in tests)
    expected = _train(learner, data, stats, passes, seed=3)  # same seed, no concurrent export
    result: dict[str, ModelState] = {}

    def train() -> None:
        result["state"] = _train(learner, data, stats, passes, seed=3)

    worker = threading.Thread(target=train)
    worker.start()
    exports = []
    while worker.is_alive() or not exports:
        exports.append(export_onnx_bytes(learner, start, stats=stats, check_X=digits.X_test))
    worker.join()
    np.testing.assert_array_equal(result["state"].params, expected.params)
    assert all(r == exports[0] for r in exports)  # every export of `start` is identical


# ------------------------------------------------------------------ other tasks, labels, modules


def test_regression_exports_values_in_the_targets_units(tmp_path):
    ds = load_dataset("diabetes")
    learner = make_learner("mlp:8", ds.schema, LearnerConfig.for_task("regression"), scaling=Scaling.network())
    data = LocalData.for_schema(ds.X_train, ds.y_train, ds.schema)
    stats = learner.initial_stats(data)
    state = _train(learner, data, stats, 10, seed=1)
    path = tmp_path / "diabetes.onnx"
    report = export_onnx(learner, state, path, stats=stats, check_X=ds.X_test)
    assert report.max_abs_diff <= 1e-5
    assert signature_text(signature(path)) == "input float32 [batch, 10] -> value float32 [batch]"
    value = run_onnx(path, ds.X_test)["value"]
    np.testing.assert_allclose(value, learner.predict(state, ds.X_test, stats), rtol=1e-5, atol=1e-3)
    rmse = learner.scores(state, ds.X_test, ds.y_test, stats)["rmse"]
    assert rmse < 65 and score_onnx(path, ds.X_test, ds.y_test) == pytest.approx(rmse, rel=1e-5)
    scaling = json.loads(read_metadata(path)["gossipd.scaling"])
    assert scaling["target_mean"] == pytest.approx(stats.mean[10]) and scaling["target_std"] > 10
    assert read_metadata(path)["gossipd.task"] == "regression"


def test_string_class_names_become_string_labels(tmp_path):
    schema = Schema.classification(3, 3, class_names=["cat", "dog", "emu"], feature_names=["w", "h", "legs"])
    learner = make_learner("logreg", schema)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3)).astype(np.float32)
    data = LocalData.from_numpy(X, rng.integers(0, 3, 30), 3)
    state = _train(learner, data, None, 3, seed=0)
    path = tmp_path / "animals.onnx"
    export_onnx(learner, state, path, check_X=X)  # no scaling: no Sub/Mul in front
    out = run_onnx(path, X)
    assert list(out["label"]) == [schema.class_names[i] for i in learner.predict(state, X)]
    assert onnx.load(path).graph.node[0].op_type != "Sub"
    assert json.loads(read_metadata(path)["gossipd.feature_names"]) == ["w", "h", "legs"]
    assert list(label_values(("0", "1", "10"))) == [0, 1, 10]
    assert label_values(("01", "1")).dtype == object  # "01" is not the integer 1's name


def test_plugin_convnet_exports_with_parity_on_raw_pixels(tmp_path, digits, user_conv_spec):
    learner = make_learner(user_conv_spec, digits.schema, LearnerConfig(lr=0.2), scaling=Scaling.network())
    data = LocalData.for_schema(digits.X_train[:300], digits.y_train[:300], digits.schema)
    stats = learner.initial_stats(data)
    state = _train(learner, data, stats, 3, seed=2)
    out = tmp_path / "conv.onnx"
    report = export_onnx(learner, state, out, stats=stats, check_X=digits.X_test)
    assert report.max_abs_diff <= 1e-4
    assert "Conv" in [n.op_type for n in onnx.load(out).graph.node]
    np.testing.assert_array_equal(run_onnx(out, digits.X_test)["label"], learner.predict(state, digits.X_test, stats))


def test_acceptance_onnx_from_a_gossip_node_scores_on_raw_rows(digits, tmp_path):
    """Acceptance: a digits/logreg node's ONNX file scores >= 0.94 on the raw test rows with
    onnxruntime (no scaling by the caller), and its labels are the node's own predictions."""
    from gossipd.sim.simulation import Simulation, SimulationConfig

    sim = Simulation.create(SimulationConfig(nodes=20, cycles=40, eval_every=40, seed=1), digits)
    sim.run()
    node = sim.nodes[0]
    path = tmp_path / "node.onnx"
    export_onnx(sim.learner, node.state, path, stats=node.stats, check_X=digits.X_test)
    out = run_onnx(path, digits.X_test)
    accuracy = float(np.mean(out["label"] == digits.y_test))
    assert accuracy >= 0.94, accuracy
    np.testing.assert_array_equal(out["label"], sim.learner.predict(node.state, digits.X_test, node.stats))

"""ONNX export: real torch exporter, real onnxruntime, real digits data."""

from __future__ import annotations

import importlib.metadata
import threading
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gossipd.data import load_dataset
from gossipd.export import (
    DEFAULT_OPSET,
    ExportError,
    ExportReport,
    export_onnx,
    export_onnx_bytes,
    read_metadata,
    score_onnx,
)
from gossipd.core.learner import Learner, LocalData
from gossipd.core.state import ModelState

SPECS = ("logreg", "mlp:32,16")
PASSES = 3


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _train(learner: Learner, data: LocalData, passes: int, seed: int) -> ModelState:
    rng = np.random.default_rng(seed)
    state = learner.initial_state()
    for _ in range(passes):
        state = learner.update(state, data, rng)
    return state


@pytest.fixture(scope="module", params=SPECS)
def trained(request, digits):
    learner = Learner(request.param, digits.n_features, digits.n_classes)
    data = LocalData.from_numpy(digits.X_train, digits.y_train, digits.n_classes)
    state = _train(learner, data, PASSES, seed=7)
    assert state.age == PASSES * len(data)
    return learner, state


def _session(path_or_bytes) -> ort.InferenceSession:
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def test_export_matches_learner(trained, digits, tmp_path):
    learner, state = trained
    path = tmp_path / "model.onnx"
    report = export_onnx(learner, state, path, check_X=digits.X_test,
                         metadata={"gossipd.node_id": "node-a"})
    assert isinstance(report, ExportReport)
    assert report.path == path
    assert report.bytes == path.stat().st_size > 0
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-5
    assert report.n_checked == len(digits.X_test)
    assert report.opset == DEFAULT_OPSET

    # A fresh session on the file, independent of the exporter's own check.
    sess = _session(path)
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    (logits,) = sess.run(None, {"input": digits.X_test})
    onnx_acc = float((logits.argmax(axis=1) == digits.y_test).mean())
    torch_acc = learner.evaluate(state, digits.X_test, digits.y_test)
    assert torch_acc > 0.8  # the model did learn something
    assert abs(onnx_acc - torch_acc) <= 0.005
    assert score_onnx(path, digits.X_test, digits.y_test) == pytest.approx(onnx_acc)
    assert score_onnx(path.read_bytes(), digits.X_test, digits.y_test) == pytest.approx(onnx_acc)


def test_metadata(trained, tmp_path):
    learner, state = trained
    path = tmp_path / "model.onnx"
    report = export_onnx(learner, state, path, metadata={"gossipd.node_id": "node-a"})
    assert report.max_abs_diff is None and report.n_checked == 0
    meta = read_metadata(path)
    assert meta == report.metadata
    assert float(meta["gossipd.age"]) == state.age
    assert meta["gossipd.fingerprint"] == learner.fingerprint
    assert meta["gossipd.spec"] == learner.spec
    assert meta["gossipd.version"] == importlib.metadata.version("gossipd")
    assert meta["gossipd.node_id"] == "node-a"
    # The same through onnxruntime's view of the file.
    custom = _session(path).get_modelmeta().custom_metadata_map
    assert custom["gossipd.fingerprint"] == learner.fingerprint


def test_metadata_cannot_override_reserved_keys(trained):
    learner, state = trained
    with pytest.raises(ValueError, match="gossipd.age"):
        export_onnx_bytes(learner, state, metadata={"gossipd.age": "0"})


@pytest.mark.parametrize("batch", [1, 7])
def test_dynamic_batch(trained, digits, tmp_path, batch):
    learner, state = trained
    path = tmp_path / "model.onnx"
    export_onnx(learner, state, path)
    model = onnx.load(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")  # symbolic batch
    assert dims[1].dim_value == digits.n_features
    X = digits.X_test[:batch]
    (logits,) = _session(path).run(None, {"input": X})
    assert logits.shape == (batch, digits.n_classes)
    np.testing.assert_allclose(logits, learner.logits(state, X).numpy(), rtol=0, atol=1e-5)


def test_bytes_is_the_same_loadable_model(trained, digits, tmp_path):
    learner, state = trained
    data = export_onnx_bytes(learner, state, check_X=digits.X_test, metadata={"gossipd.node_id": "n"})
    assert isinstance(data, bytes)
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    assert read_metadata(data)["gossipd.fingerprint"] == learner.fingerprint
    (logits,) = _session(data).run(None, {"input": digits.X_test[:3]})
    np.testing.assert_allclose(logits, learner.logits(state, digits.X_test[:3]).numpy(), rtol=0, atol=1e-5)
    # The HTTP endpoint and the file export produce the same artifact.
    path = tmp_path / "model.onnx"
    export_onnx(learner, state, path, metadata={"gossipd.node_id": "n"})
    assert path.read_bytes() == data


def test_atomic_write_leaves_only_the_file(trained, digits, tmp_path):
    learner, state = trained
    path = tmp_path / "model.onnx"
    export_onnx(learner, state, path, check_X=digits.X_test)
    export_onnx(learner, state, str(path), check_X=digits.X_test)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_check_writes_nothing(trained, digits, tmp_path, monkeypatch):
    learner, state = trained
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    real_logits = learner.logits
    monkeypatch.setattr(learner, "logits", lambda s, X: real_logits(s, X) + 1e-3)
    with pytest.raises(ExportError, match=r"differ by up to 0\.001"):
        export_onnx(learner, state, path, check_X=digits.X_test)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_state_of_wrong_size_raises(trained, tmp_path):
    learner, _ = trained
    path = tmp_path / "model.onnx"
    bad = ModelState(np.zeros(learner.n_params + 1, dtype=np.float32), 5.0)
    with pytest.raises(ValueError, match="parameters"):
        export_onnx(learner, bad, path)
    with pytest.raises(ValueError, match="parameters"):
        export_onnx_bytes(learner, bad)
    assert list(tmp_path.iterdir()) == []


def test_check_X_of_wrong_shape_raises(trained, digits):
    learner, state = trained
    with pytest.raises(ValueError, match="check_X"):
        export_onnx_bytes(learner, state, check_X=digits.X_test[:, :5])


def test_export_is_quiet(trained, digits, capfd):
    learner, state = trained
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx_bytes(learner, state, check_X=digits.X_test)
    assert [str(w.message) for w in caught] == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_export_while_training_in_another_thread(digits):
    """The daemon exports from one thread while a worker thread trains."""
    learner = Learner("mlp:32,16", digits.n_features, digits.n_classes)
    data = LocalData.from_numpy(digits.X_train, digits.y_train, digits.n_classes)
    start = _train(learner, data, 1, seed=3)
    passes = 40  # long enough for several exports to overlap it (not asserted: no timing in tests)
    expected = _train(learner, data, passes, seed=3)  # same seed, no concurrent export

    result: dict[str, ModelState] = {}

    def train() -> None:
        rng = np.random.default_rng(3)
        s = learner.update(learner.initial_state(), data, rng)
        for _ in range(passes - 1):
            s = learner.update(s, data, rng)
        result["state"] = s

    worker = threading.Thread(target=train)
    worker.start()
    exports = []
    while worker.is_alive() or not exports:
        exports.append(export_onnx_bytes(learner, start, check_X=digits.X_test))
    worker.join()
    np.testing.assert_array_equal(result["state"].params, expected.params)
    assert all(r == exports[0] for r in exports)  # every export of `start` is identical

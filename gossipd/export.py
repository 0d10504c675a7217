"""ONNX export of a node's model: a file an application can use as it is.

The graph takes ``input``: float32 ``[batch, n_features]`` of RAW features (the
model's scaling is baked in as ``Sub``/``Mul`` nodes with the node's
statistics) and answers, for classification,

- ``label``: ``[batch]``, the class label itself: int64 when every class name
  is an integer (digits: 0..9), else a string;
- ``probabilities``: float32 ``[batch, n_classes]``, in ``class_names`` order;

and for regression ``value``: float32 ``[batch]``, in the target's own units.
The batch axis is dynamic; image-shaped models reshape the flat rows inside
the graph (``learner.build_module`` takes flat rows).

``metadata_props`` say what to feed and what comes out: ``gossipd.task``,
``gossipd.feature_names``, ``gossipd.class_names``, ``gossipd.input_shape`` and
``gossipd.scaling`` (JSON), and ``gossipd.age``, ``gossipd.fingerprint``,
``gossipd.spec``, ``gossipd.version``, plus whatever the caller adds (for
example ``gossipd.node_id``).

Two builders, one file format. A built-in model (``logreg``, ``mlp:...``) is
written out directly with ``onnx.helper`` (``Sub``, ``Mul``, ``Gemm``, ``Relu``,
``Softmax``, ``ArgMax``): no torch, so a light daemon exports without loading
it. A torch module (``cnn``, plugins) goes through torch's exporter
(:mod:`gossipd.export_torch`). Either way the label lookup, the metadata,
``onnx.checker`` and the onnxruntime parity check below are the same.

Thread safety: export only reads the immutable :class:`ModelState` and builds
its own graph (never the learner's scratch state), so it may run in a worker
thread while another thread trains.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from gossipd.core.learner import Learner
from gossipd.core.linear_stack import LinearStackLearner
from gossipd.core.scaling import FeatureStats
from gossipd.core.state import ModelState
from gossipd.files import atomic_write

INPUT_NAME = "input"
LABEL, PROBABILITIES, VALUE = "label", "probabilities", "value"
_LABEL_INDEX = "label_index"  # the network's argmax, turned into LABEL by a Gather on the class names
# Opset 17 is old enough for every onnxruntime released since 2022 (and
# onnxruntime-web) and has all this graph needs (Gemm, Conv, Relu, Softmax, ArgMax, Gather).
DEFAULT_OPSET = 17
# Largest tolerated |onnxruntime - learner| over the probabilities (or, for
# regression, the values relative to max(1, |value|)) of check_X.
PARITY_ATOL = 1e-5
RESERVED_KEYS = ("gossipd.age", "gossipd.fingerprint", "gossipd.spec", "gossipd.version", "gossipd.task",
                 "gossipd.feature_names", "gossipd.class_names", "gossipd.input_shape", "gossipd.scaling")

class ExportError(RuntimeError):
    """The model could not be exported, or the export disagrees with the learner."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how it was checked.

    max_abs_diff: largest |onnxruntime - learner| over the outputs of ``check_X``
        (None when no check_X was given); n_checked: rows of check_X compared.
    """

    path: Path
    bytes: int
    max_abs_diff: float | None
    n_checked: int
    opset: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Built:
    data: bytes
    max_abs_diff: float | None
    n_checked: int
    opset: int
    metadata: dict[str, str]


def package_version() -> str:
    try:
        return importlib.metadata.version("gossipd")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _session(model: bytes | str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # Small models: one thread each avoids spinning up a pool per session.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def _source(path_or_bytes: Path | str | bytes | bytearray | memoryview) -> bytes | str:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    return os.fspath(path_or_bytes)


# -- what goes into the file ----------------------------------------------------------------


def label_values(class_names: tuple[str, ...]) -> np.ndarray:
    """The ``label`` output's values: int64 if every class name is an integer, else strings."""
    try:
        ints = [int(c) for c in class_names]
    except ValueError:
        return np.array(class_names, dtype=object)
    if [str(i) for i in ints] != list(class_names):
        return np.array(class_names, dtype=object)  # e.g. "01" must stay "01"
    return np.array(ints, dtype=np.int64)


def scaling_metadata(learner: Learner, stats: FeatureStats | None) -> dict[str, Any]:
    """The scaling the graph applies, as plain numbers (``gossipd.scaling``)."""
    st = learner.stats_for(stats)
    out: dict[str, Any] = {"mode": learner.scaling.mode}
    if st is None:
        return out
    d = learner.n_features
    out.update({"count": st.count, "feature_mean": st.mean[:d].tolist(), "feature_std": st.std[:d].tolist()})
    if learner.task == "regression":
        out.update({"target_mean": float(st.mean[d]), "target_std": float(st.std[d])})
    return out


def _metadata(learner: Learner, state: ModelState, stats: FeatureStats | None,
              extra: Mapping[str, str] | None) -> dict[str, str]:
    schema = learner.schema
    names = list(schema.feature_names) or [f"x{i}" for i in range(schema.n_features)]
    meta = {
        "gossipd.age": repr(float(state.age)),
        "gossipd.fingerprint": learner.fingerprint,
        "gossipd.spec": learner.spec,
        "gossipd.version": package_version(),
        "gossipd.task": schema.task,
        "gossipd.feature_names": json.dumps(names),
        "gossipd.class_names": json.dumps(list(schema.class_names)),
        "gossipd.input_shape": json.dumps(list(schema.input_shape)),
        "gossipd.scaling": json.dumps(scaling_metadata(learner, stats)),
    }
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata keys and values must be str, got {key!r}: {value!r}")
        if key in meta:
            raise ValueError(f"metadata key {key!r} is set by the exporter and cannot be overridden")
        meta[key] = value
    return meta


def _output_names(task: str) -> list[str]:
    return [VALUE] if task == "regression" else [_LABEL_INDEX, PROBABILITIES]


def _linear_stack_graph(learner: LinearStackLearner, state: ModelState, st: FeatureStats | None,
                        opset: int) -> onnx.ModelProto:
    """The built-in stack written out with ``onnx.helper``, no torch: ``Sub``/``Mul`` (scaling),
    ``Gemm`` per layer with ``Relu`` between, then ``ArgMax`` and ``Softmax`` (classification)
    or the de-standardised value (regression)."""
    d = learner.n_features
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name=name))
        return name

    h = INPUT_NAME
    if st is not None:
        nodes.append(helper.make_node("Sub", [h, const("feature_mean", st.shift32[:d])], ["centred"]))
        nodes.append(helper.make_node("Mul", ["centred", const("feature_inv_std", st.inv_scale32[:d])], ["scaled"]))
        h = "scaled"
    layers = learner.layers(state)
    for j, (w, b) in enumerate(layers):
        out = f"linear{j}"
        nodes.append(helper.make_node("Gemm", [h, const(f"layer{j}.weight", w), const(f"layer{j}.bias", b)], [out],
                                      transB=1))
        h = out
        if j < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [h], [f"relu{j}"]))
            h = f"relu{j}"
    n_out = learner.n_outputs
    if learner.task == "classification":
        nodes.append(helper.make_node("ArgMax", [h], [_LABEL_INDEX], axis=1, keepdims=0))
        nodes.append(helper.make_node("Softmax", [h], [PROBABILITIES], axis=1))
        outputs = [helper.make_tensor_value_info(_LABEL_INDEX, onnx.TensorProto.INT64, ["batch"]),
                   helper.make_tensor_value_info(PROBABILITIES, onnx.TensorProto.FLOAT, ["batch", n_out])]
    else:
        std, mean = (1.0, 0.0) if st is None else (float(st.std[d]), float(st.mean[d]))
        nodes.append(helper.make_node("Squeeze", [h, const("value_axis", np.array([1], np.int64))], ["standardised"]))
        nodes.append(helper.make_node("Mul", ["standardised", const("target_std", np.array(std, np.float32))],
                                      ["spread"]))
        nodes.append(helper.make_node("Add", ["spread", const("target_mean", np.array(mean, np.float32))], [VALUE]))
        outputs = [helper.make_tensor_value_info(VALUE, onnx.TensorProto.FLOAT, ["batch"])]
    graph = helper.make_graph(nodes, "gossipd", [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT,
                                                                               ["batch", d])], outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="gossipd",
                              producer_version=package_version())
    model.ir_version = helper.find_min_ir_version_for(opsets)  # what older onnxruntimes accept
    return model


def _graph(learner: Learner, state: ModelState, st: FeatureStats | None, opset: int) -> onnx.ModelProto:
    """The network with scaling in front and the task's outputs (``label_index`` before the label lookup)."""
    if isinstance(learner, LinearStackLearner):
        return _linear_stack_graph(learner, state, st, opset)
    from gossipd.export_torch import torch_graph  # a torch module: torch's exporter (imports torch)

    try:
        return torch_graph(learner, state, st, INPUT_NAME, _output_names(learner.task), opset)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {learner.spec!r}: {exc}") from exc


def _add_label(model: onnx.ModelProto, class_names: tuple[str, ...]) -> None:
    """Replace the ``label_index`` output by ``label = class_names[label_index]``."""
    values = label_values(class_names)
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(values, name="class_labels"))
    graph.node.append(helper.make_node("Gather", ["class_labels", _LABEL_INDEX], [LABEL], axis=0,
                                       name="class_label_of_index"))
    elem = onnx.TensorProto.INT64 if values.dtype == np.int64 else onnx.TensorProto.STRING
    label = helper.make_tensor_value_info(LABEL, elem, ["batch"])
    kept = [o for o in graph.output if o.name != _LABEL_INDEX]
    del graph.output[:]
    graph.output.extend([label, *kept])


def _check_parity(data: bytes, learner: Learner, state: ModelState, stats: FeatureStats | None,
                  check_X: np.ndarray) -> float:
    """Largest |onnxruntime - learner| on check_X (and on its first row alone); ExportError if
    over the tolerance or if a label differs where the learner's choice is not a near-tie."""
    sess = _session(data)
    expected = learner.outputs(state, check_X, stats).astype(np.float64)
    worst = 0.0
    for X, want in ((check_X, expected), (check_X[:1], expected[:1])):  # one row: a dynamic batch axis
        got = run_onnx(sess, X)
        key = VALUE if learner.task == "regression" else PROBABILITIES
        if got[key].shape != want.shape:
            raise ExportError(f"onnxruntime {key} have shape {got[key].shape}, expected {want.shape}")
        diff = np.abs(got[key].astype(np.float64) - want)
        if learner.task == "regression":
            diff = diff / np.maximum(1.0, np.abs(want))
        worst = max(worst, float(diff.max()))
        if learner.task == "classification":
            index = want.argmax(axis=1)
            top2 = np.sort(want, axis=1)[:, -2:]
            clear = (top2[:, 1] - top2[:, 0]) > 2 * PARITY_ATOL
            labels = label_values(learner.schema.class_names or tuple(map(str, range(learner.n_classes))))
            wrong = int(np.sum((got[LABEL] != labels[index]) & clear))
            if wrong:
                raise ExportError(f"onnxruntime labels differ from the learner's on {wrong} of {len(X)} rows")
    if not worst <= PARITY_ATOL:  # also catches NaN
        what = "values (relative)" if learner.task == "regression" else "probabilities"
        raise ExportError(f"onnxruntime and the learner's {what} differ by up to {worst:.3g} "
                          f"(tolerance {PARITY_ATOL:g}) on {len(check_X)} rows")
    return worst


def _build(learner: Learner, state: ModelState, stats: FeatureStats | None,
           metadata: Mapping[str, str] | None, check_X: np.ndarray | None, opset: int | None) -> _Built:
    learner.check(state)  # ValueError on a size mismatch, before any work
    st = learner.stats_for(stats)  # ValueError when network scaling lacks its statistics
    if not np.isfinite(state.params).all():
        raise ValueError("refusing to export a model with non-finite parameters")
    meta = _metadata(learner, state, stats, metadata)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if check_X is not None:
        check_X = np.asarray(check_X, dtype=np.float32)
        if check_X.ndim != 2 or check_X.shape[1] != learner.n_features or check_X.shape[0] == 0:
            raise ValueError(f"check_X must have shape [n>=1, {learner.n_features}], got {check_X.shape}")

    model = _graph(learner, state, st, opset)
    if learner.task == "classification":
        names = learner.schema.class_names or tuple(map(str, range(learner.n_classes)))
        _add_label(model, names)
    model.graph.doc_string = signature_text(signature(model))
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported model fails onnx.checker: {exc}") from exc
    data = model.SerializeToString()
    real_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)

    max_diff: float | None = None
    n_checked = 0
    if check_X is not None:
        max_diff = _check_parity(data, learner, state, stats, check_X)
        n_checked = int(check_X.shape[0])
    return _Built(data, max_diff, n_checked, int(real_opset), meta)


def export_onnx_bytes(learner: Learner, state: ModelState, *, stats: FeatureStats | None = None,
                      metadata: Mapping[str, str] | None = None,
                      check_X: np.ndarray | None = None,
                      opset: int | None = None) -> bytes:
    """The serialised ONNX model of ``state`` (same checks as :func:`export_onnx`)."""
    return _build(learner, state, stats, metadata, check_X, opset).data


def export_onnx(learner: Learner, state: ModelState, path: Path | str, *,
                stats: FeatureStats | None = None,
                metadata: Mapping[str, str] | None = None,
                check_X: np.ndarray | None = None,
                opset: int | None = None) -> ExportReport:
    """Export ``state`` (scaled by ``stats``, the node's statistics under network
    scaling) to ``path`` atomically, after checking it.

    Raises ValueError if ``state`` does not fit ``learner`` (or check_X has the
    wrong shape, or network scaling lacks ``stats``) and ExportError if the
    exporter, onnx.checker or the onnxruntime parity check on the RAW rows
    ``check_X`` (outputs within 1e-5, the same labels, plus a one-row batch)
    fails. Nothing is written unless every check passes.
    """
    path = Path(path)
    built = _build(learner, state, stats, metadata, check_X, opset)
    atomic_write(path, built.data, mode=0o644)  # a model file is not a secret
    return ExportReport(path=path, bytes=len(built.data), max_abs_diff=built.max_abs_diff,
                        n_checked=built.n_checked, opset=built.opset, metadata=dict(built.metadata))


# -- reading a file back -------------------------------------------------------------------


def run_onnx(model: Path | str | bytes | ort.InferenceSession, X: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the model on raw rows ``X``, by name."""
    sess = model if isinstance(model, ort.InferenceSession) else _session(_source(model))
    name = sess.get_inputs()[0].name
    outs = sess.run(None, {name: np.ascontiguousarray(X, dtype=np.float32)})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def score_onnx(path_or_bytes: Path | str | bytes, X: np.ndarray, y: np.ndarray) -> float:
    """The headline metric of an exported model on raw (X, y), by onnxruntime: accuracy
    for classification (``y`` holds class indices, as in a Dataset), RMSE for regression."""
    y = np.asarray(y)
    if y.shape[0] == 0:
        return float("nan")
    out = run_onnx(path_or_bytes, X)
    if VALUE in out:
        return float(np.sqrt(np.mean((out[VALUE].astype(np.float64) - y) ** 2)))
    return float((out[PROBABILITIES].argmax(axis=1) == y).mean())


def read_metadata(path_or_bytes: Path | str | bytes) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file or serialised model."""
    model = _load(path_or_bytes)
    return {p.key: p.value for p in model.metadata_props}


def _load(path_or_bytes: Path | str | bytes) -> onnx.ModelProto:
    src = _source(path_or_bytes)
    return onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(src, load_external_data=False)


_ELEM = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.STRING: "string",
         onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.INT32: "int32"}


def signature(model: onnx.ModelProto | Path | str | bytes) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs: ``{"inputs": [{"name", "type", "shape"}], "outputs": [...]}``;
    a symbolic dimension is its name (``batch``)."""
    if not isinstance(model, onnx.ModelProto):
        model = _load(model)

    def describe(v: onnx.ValueInfoProto) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {"name": v.name, "type": _ELEM.get(t.elem_type, str(t.elem_type)), "shape": shape}

    return {"inputs": [describe(v) for v in model.graph.input],
            "outputs": [describe(v) for v in model.graph.output]}


def signature_text(sig: dict[str, list[dict[str, Any]]]) -> str:
    """``input float32 [batch, 64] -> label int64 [batch], probabilities float32 [batch, 10]``."""
    def one(v: dict[str, Any]) -> str:
        return f"{v['name']} {v['type']} [{', '.join(map(str, v['shape']))}]"

    return ", ".join(map(one, sig["inputs"])) + " -> " + ", ".join(map(one, sig["outputs"]))

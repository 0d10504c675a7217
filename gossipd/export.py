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

Exporter choice: torch 2.13's default (``dynamo=True``, torch.export based)
takes ~4.5 s for the first export in a process and ~1 s after that for a
three-layer MLP, and logs several lines per call; the legacy TorchScript
exporter (``dynamo=False``) takes ~0.15 s cold and ~20 ms warm for the same
model and prints nothing but a DeprecationWarning. It handles the Linear/ReLU
stacks and small convolutional nets used here, so we use it and silence only
that one warning. If a later torch drops it, switch to ``dynamo=True`` with
``dynamic_shapes=({0: "batch"},)``; the onnxruntime parity check below still
guards the result.

Thread safety: export only reads the immutable :class:`ModelState` and builds
its own module (never the learner's scratch tensors), so it may run in a worker
thread while another thread trains. The legacy exporter keeps process-wide
settings (``torch.onnx`` GLOBALS: opset, training mode), so exports are
serialised among themselves by ``_EXPORT_LOCK``; training never takes it.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from torch import nn

from gossipd.core.learner import Learner
from gossipd.core.scaling import FeatureStats
from gossipd.core.state import ModelState
from gossipd.files import atomic_write

INPUT_NAME = "input"
LABEL, PROBABILITIES, VALUE = "label", "probabilities", "value"
_LABEL_INDEX = "label_index"  # torch's output, turned into LABEL by a Gather on the class names
# Opset 17 is old enough for every onnxruntime released since 2022 (and
# onnxruntime-web) and has all this graph needs (Gemm, Conv, Relu, Softmax, ArgMax, Gather).
DEFAULT_OPSET = 17
# Largest tolerated |onnxruntime - learner| over the probabilities (or, for
# regression, the values relative to max(1, |value|)) of check_X.
PARITY_ATOL = 1e-5
RESERVED_KEYS = ("gossipd.age", "gossipd.fingerprint", "gossipd.spec", "gossipd.version", "gossipd.task",
                 "gossipd.feature_names", "gossipd.class_names", "gossipd.input_shape", "gossipd.scaling")

_EXPORT_LOCK = threading.Lock()


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


class _Deployable(nn.Module):
    """Raw features in; scaling, the network, then what a user wants out."""

    def __init__(self, net: nn.Module, learner: Learner, stats: FeatureStats | None) -> None:
        super().__init__()
        self.net = net
        self.task = learner.task
        d = learner.n_features
        self.scaled = stats is not None
        if stats is not None:
            self.register_buffer("feature_mean", torch.from_numpy(stats.shift32[:d].copy()))
            self.register_buffer("feature_inv_std", torch.from_numpy(stats.inv_scale32[:d].copy()))
            if self.task == "regression":
                self.target_mean = float(stats.mean[d])
                self.target_std = float(stats.std[d])
        if self.task == "regression" and stats is None:
            self.target_mean, self.target_std = 0.0, 1.0

    def forward(self, x: torch.Tensor) -> Any:
        if self.scaled:
            x = (x - self.feature_mean) * self.feature_inv_std
        out = self.net(x)
        if self.task == "regression":
            return out.reshape(-1) * self.target_std + self.target_mean
        return torch.argmax(out, dim=1), torch.softmax(out, dim=1)


def _output_names(task: str) -> list[str]:
    return [VALUE] if task == "regression" else [_LABEL_INDEX, PROBABILITIES]


def _torch_export(module: nn.Module, n_features: int, task: str, opset: int) -> bytes:
    buf = io.BytesIO()
    dummy = torch.zeros(2, n_features, dtype=torch.float32)
    outputs = _output_names(task)
    # catch_warnings swaps the process-wide filter list (Python < 3.14); it only
    # adds two narrow "ignore" entries, so another thread's warnings still show.
    with _EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
        # Only the "legacy TorchScript-based ONNX export" notice is silenced (and
        # see below); any other warning still shows and errors propagate.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        # ... and the exporter's deprecation notices about its own internals
        # (e.g. setup_onnx_logging), which say nothing about our code.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        torch.onnx.export(
            module, (dummy,), buf,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)},
            opset_version=opset,
            do_constant_folding=True,
            export_params=True,
        )
    return buf.getvalue()


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
        raise ExportError(f"onnxruntime and torch {what} differ by up to {worst:.3g} "
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

    module = _Deployable(learner.build_module(state), learner, st).eval()
    try:
        raw = _torch_export(module, learner.n_features, learner.task, opset)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {learner.spec!r}: {exc}") from exc

    model = onnx.load_from_string(raw)
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

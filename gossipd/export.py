"""ONNX export of a node's model, checked against the learner with onnxruntime.

The exported graph takes ``input`` (float32, ``[batch, n_features]``, batch
dynamic) and returns ``logits`` (``[batch, n_classes]``). The model's
``metadata_props`` carry ``gossipd.age``, ``gossipd.fingerprint``,
``gossipd.spec`` and ``gossipd.version`` plus whatever the caller adds (for
example ``gossipd.node_id``).

Exporter choice: torch 2.13's default (``dynamo=True``, torch.export based)
takes ~4.5 s for the first export in a process and ~1 s after that for a
three-layer MLP, and logs several lines per call; the legacy TorchScript
exporter (``dynamo=False``) takes ~0.15 s cold and ~20 ms warm for the same
model and prints nothing but a DeprecationWarning. A Linear/ReLU stack is the
case the legacy exporter handles best, so we use it and silence only that one
warning. If a later torch drops it, switch to ``dynamo=True`` with
``dynamic_shapes=({0: "batch"},)``; the onnxruntime parity check below still
guards the result.

Thread safety: export only reads the immutable :class:`ModelState` and builds
its own module (never the learner's scratch tensor), so it may run in a worker
thread while another thread trains. The legacy exporter keeps process-wide
settings (``torch.onnx`` GLOBALS: opset, training mode), so exports are
serialised among themselves by ``_EXPORT_LOCK``; training never takes it.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from gossipd.files import atomic_write
from gossipd.core.learner import Learner
from gossipd.core.state import ModelState

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Opset 17 is old enough for every onnxruntime released since 2022 (and
# onnxruntime-web) and has all this graph needs (Gemm, Relu).
DEFAULT_OPSET = 17
# Largest tolerated |onnxruntime - torch| over the logits of check_X.
PARITY_ATOL = 1e-5
RESERVED_KEYS = ("gossipd.age", "gossipd.fingerprint", "gossipd.spec", "gossipd.version")

_EXPORT_LOCK = threading.Lock()


class ExportError(RuntimeError):
    """The model could not be exported, or the export disagrees with the learner."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how it was checked.

    max_abs_diff: largest |onnxruntime - learner| over the logits of ``check_X``
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


def _run(sess: ort.InferenceSession, X: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    (out,) = sess.run(None, {name: np.ascontiguousarray(X, dtype=np.float32)})
    return out


def _metadata(learner: Learner, state: ModelState, extra: Mapping[str, str] | None) -> dict[str, str]:
    meta = {
        "gossipd.age": repr(float(state.age)),
        "gossipd.fingerprint": learner.fingerprint,
        "gossipd.spec": learner.spec,
        "gossipd.version": package_version(),
    }
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata keys and values must be str, got {key!r}: {value!r}")
        if key in meta:
            raise ValueError(f"metadata key {key!r} is set by the exporter and cannot be overridden")
        meta[key] = value
    return meta


def _torch_export(module: torch.nn.Module, n_features: int, opset: int) -> bytes:
    buf = io.BytesIO()
    dummy = torch.zeros(2, n_features, dtype=torch.float32)
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
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            export_params=True,
        )
    return buf.getvalue()


def _build(learner: Learner, state: ModelState, metadata: Mapping[str, str] | None,
           check_X: np.ndarray | None, opset: int | None) -> _Built:
    learner.check(state)  # ValueError on a size mismatch, before any work
    if not np.isfinite(state.params).all():
        raise ValueError("refusing to export a model with non-finite parameters")
    meta = _metadata(learner, state, metadata)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if check_X is not None:
        check_X = np.asarray(check_X, dtype=np.float32)
        if check_X.ndim != 2 or check_X.shape[1] != learner.n_features or check_X.shape[0] == 0:
            raise ValueError(f"check_X must have shape [n>=1, {learner.n_features}], got {check_X.shape}")

    module = learner.build_module(state)
    try:
        raw = _torch_export(module, learner.n_features, opset)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {learner.spec!r}: {exc}") from exc

    model = onnx.load_from_string(raw)
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
        sess = _session(data)
        expected = learner.logits(state, check_X).numpy()
        got = _run(sess, check_X)
        if got.shape != expected.shape:
            raise ExportError(f"onnxruntime logits have shape {got.shape}, expected {expected.shape}")
        # The batch axis must really be dynamic: one row must work too.
        got1 = _run(sess, check_X[:1])
        if got1.shape != (1, learner.n_classes):
            raise ExportError(f"onnxruntime logits for one row have shape {got1.shape}")
        diff = np.abs(got.astype(np.float64) - expected)
        diff1 = np.abs(got1.astype(np.float64) - expected[:1])
        max_diff = float(max(diff.max(), diff1.max()))
        if not max_diff <= PARITY_ATOL:  # also catches NaN
            raise ExportError(
                f"onnxruntime and torch logits differ by up to {max_diff:.3g} "
                f"(tolerance {PARITY_ATOL:g}) on {len(check_X)} rows"
            )
        n_checked = int(check_X.shape[0])
    return _Built(data, max_diff, n_checked, int(real_opset), meta)


def export_onnx_bytes(learner: Learner, state: ModelState, *,
                      metadata: Mapping[str, str] | None = None,
                      check_X: np.ndarray | None = None,
                      opset: int | None = None) -> bytes:
    """The serialised ONNX model of ``state`` (same checks as :func:`export_onnx`)."""
    return _build(learner, state, metadata, check_X, opset).data


def export_onnx(learner: Learner, state: ModelState, path: Path | str, *,
                metadata: Mapping[str, str] | None = None,
                check_X: np.ndarray | None = None,
                opset: int | None = None) -> ExportReport:
    """Export ``state`` to ``path`` atomically, after checking it.

    Raises ValueError if ``state`` does not fit ``learner`` (or check_X has the
    wrong shape) and ExportError if the exporter, onnx.checker or the
    onnxruntime parity check (max |diff| <= 1e-5 on ``check_X``, plus a
    one-row batch) fails. Nothing is written unless every check passes.
    """
    path = Path(path)
    built = _build(learner, state, metadata, check_X, opset)
    atomic_write(path, built.data, mode=0o644)  # a model file is not a secret
    return ExportReport(path=path, bytes=len(built.data), max_abs_diff=built.max_abs_diff,
                        n_checked=built.n_checked, opset=built.opset, metadata=dict(built.metadata))


def _source(path_or_bytes: Path | str | bytes | bytearray | memoryview) -> bytes | str:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    return os.fspath(path_or_bytes)


def score_onnx(path_or_bytes: Path | str | bytes, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy (argmax of logits) of an exported model on (X, y), by onnxruntime."""
    y = np.asarray(y)
    if y.shape[0] == 0:
        return float("nan")
    logits = _run(_session(_source(path_or_bytes)), np.asarray(X, dtype=np.float32))
    return float((logits.argmax(axis=1) == y).mean())


def read_metadata(path_or_bytes: Path | str | bytes) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file or serialised model."""
    src = _source(path_or_bytes)
    model = onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(src, load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}

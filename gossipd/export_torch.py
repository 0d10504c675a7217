"""ONNX graphs of torch modules (``cnn``, plugins) by torch's exporter; imports torch.

:mod:`gossipd.export` calls :func:`torch_graph` for any learner that is not a
built-in stack, then adds the label lookup, the metadata and the checks.

Exporter choice: torch 2.13's default (``dynamo=True``, torch.export based)
takes ~4.5 s for the first export in a process and ~1 s after that for a
three-layer MLP, and logs several lines per call; the legacy TorchScript
exporter (``dynamo=False``) takes ~0.15 s cold and ~20 ms warm for the same
model and prints nothing but a DeprecationWarning. It handles the small
convolutional nets used here, so we use it and silence only that one warning.
If a later torch drops it, switch to ``dynamo=True`` with
``dynamic_shapes=({0: "batch"},)``; the onnxruntime parity check still guards
the result.

The legacy exporter keeps process-wide settings (``torch.onnx`` GLOBALS:
opset, training mode), so exports are serialised among themselves by
``_EXPORT_LOCK``; training never takes it.
"""

from __future__ import annotations

import io
import threading
import warnings
from typing import Any

import onnx
import torch
from torch import nn

from gossipd.core.learner import Learner
from gossipd.core.scaling import FeatureStats
from gossipd.core.state import ModelState

_EXPORT_LOCK = threading.Lock()


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


def torch_graph(learner: Learner, state: ModelState, st: FeatureStats | None, input_name: str,
                output_names: list[str], opset: int) -> onnx.ModelProto:
    """``learner.build_module(state)`` with scaling in front and the task's outputs, exported."""
    module = _Deployable(learner.build_module(state), learner, st).eval()
    buf = io.BytesIO()
    dummy = torch.zeros(2, learner.n_features, dtype=torch.float32)
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
            input_names=[input_name],
            output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in (input_name, *output_names)},
            opset_version=opset,
            do_constant_folding=True,
            export_params=True,
        )
    return onnx.load_from_string(buf.getvalue())

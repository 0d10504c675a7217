"""The built-in ``logreg`` / ``mlp:H1,H2,...`` learner: a Linear/ReLU stack with
hand-written backprop.

The model's parameters live in ONE flat float32 tensor; each layer's weight and
bias are views into it (``nn.Linear`` layout: the ``(out, in)`` weight, then the
bias). Loading a received model is one ``copy_`` and the gradient comes out
flat, so the hot path has no per-parameter Python loop.

Classification trains on the mean cross-entropy of a softmax; regression on
half the mean squared error of the standardised target, whose gradient at the
output, ``z - t``, has the same form as the softmax's ``p - onehot``. The one
loop below does both.

Autograd costs ~90 us per call on these tiny models, five times the whole SGD
step; the stack's gradient is short enough to write out, and
``tests/test_learner.py`` checks it against autograd. The maths is plain
matrix products over a ``(layers)`` list, so a numpy twin (a torch-free daemon)
or a version batched over many nodes' models (``_forward_many`` already is)
can follow the same structure.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gossipd.core.learner_base import LearnerBase
from gossipd.core.local_data import LocalData
from gossipd.core.scaling import FeatureStats, Scaling
from gossipd.core.spec import LearnerConfig, ModelSpec, Schema
from gossipd.core.state import ModelState

Layers = list[tuple[torch.Tensor, torch.Tensor]]


class LinearStackLearner(LearnerBase):
    """Builds, trains and evaluates one Linear/ReLU stack."""

    def __init__(self, model: ModelSpec, schema: Schema, config: LearnerConfig | None = None,
                 scaling: Scaling | None = None) -> None:
        if not model.hand_written:
            raise ValueError(f"the hand-written learner runs logreg and mlp, not {model.text!r}")
        super().__init__(model, schema, config, scaling)
        if self.config.optimizer != "sgd":
            raise ValueError(f"model {self.spec!r} trains by SGD only (optimizer {self.config.optimizer!r} "
                             "needs a torch module: use --model python:... )")
        self.hidden = model.widths
        widths = (schema.n_features, *self.hidden, schema.n_outputs)
        self.layer_shapes: list[tuple[tuple[int, int], tuple[int]]] = [
            ((o, i), (o,)) for i, o in zip(widths[:-1], widths[1:])
        ]
        self.n_params = sum(o * i + o for (o, i), _ in self.layer_shapes)
        self._flat = torch.zeros(self.n_params, dtype=torch.float32)
        self._layers = self._views(self._flat)
        self.fingerprint = self._fingerprint()

    # -- structure ---------------------------------------------------------

    def _views(self, flat: torch.Tensor) -> Layers:
        layers, pos = [], 0
        for (o, i), _ in self.layer_shapes:
            w = flat[pos: pos + o * i].view(o, i)
            pos += o * i
            b = flat[pos: pos + o]
            pos += o
            layers.append((w, b))
        return layers

    def _fingerprint(self) -> str:
        shapes = ";".join(f"{w}x{b}" for w, b in self.layer_shapes)
        text = f"{self.model.kind}|{shapes}|{self._identity()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @staticmethod
    def _stack(x: torch.Tensor, layers: Layers) -> torch.Tensor:
        for j, (w, b) in enumerate(layers):
            x = torch.addmm(b, x, w.t())
            if j < len(layers) - 1:
                x = torch.relu(x)
        return x

    def build_module(self, state: ModelState | None = None) -> nn.Sequential:
        """An ordinary ``nn.Sequential`` (Linear/ReLU) holding ``state``: the network on
        scaled inputs, for export and for autograd comparisons."""
        mods: list[nn.Module] = []
        for j, ((o, i), _) in enumerate(self.layer_shapes):
            mods.append(nn.Linear(i, o))
            if j < len(self.layer_shapes) - 1:
                mods.append(nn.ReLU())
        module = nn.Sequential(*mods)
        if state is not None:
            torch.nn.utils.vector_to_parameters(torch.from_numpy(np.array(state.params)), module.parameters())
        return module.eval()

    # -- states --------------------------------------------------------------

    def initial_state(self) -> ModelState:
        """Age-0 parameters, identical on every node with the same ``init_seed``."""
        gen = torch.Generator().manual_seed(self.config.init_seed)
        parts = []
        for (o, i), _ in self.layer_shapes:
            bound = 1.0 / math.sqrt(i)  # torch.nn.Linear's default range
            if not self.hidden:
                parts.append(torch.zeros(o * i + o))  # convex problem: zero is the natural start
            else:
                parts.append((torch.rand(o * i + o, generator=gen) * 2 - 1) * bound)
        return ModelState(torch.cat(parts).numpy(), 0.0)

    # -- training ---------------------------------------------------------------

    def update(self, state: ModelState, data: LocalData, rng: np.random.Generator,
               stats: FeatureStats | None = None) -> ModelState:
        """One pass of mini-batch SGD over ``data``; age grows by the examples seen."""
        inputs = self._training_inputs(state, data, stats)
        if inputs is None:
            return state
        X, T = inputs
        n = len(data)
        bs = self.config.batch_size
        age = state.age
        with self.lock, torch.no_grad():
            self._flat.numpy()[:] = state.params  # numpy-side copy: params may be read-only
            order = torch.from_numpy(rng.permutation(n)) if n > bs else None
            for start in range(0, n, bs):
                if order is None:
                    xb, tb = X, T
                else:
                    idx = order[start: start + bs]
                    xb, tb = X[idx], T[idx]
                self._sgd_step(xb, tb, self.lr_at(age))
                age += int(xb.shape[0])
            params = self._flat.numpy().copy()
        if not np.isfinite(params).all():
            # A diverged step must not poison the network; keep the input model.
            return state
        return ModelState.owned(params, age)

    def _sgd_step(self, x: torch.Tensor, target: torch.Tensor, lr: float) -> None:
        """One step on the mean loss, back-propagated by hand."""
        layers = self._layers
        acts = [x]
        for j, (w, b) in enumerate(layers):
            z = torch.addmm(b, acts[-1], w.t())
            acts.append(torch.relu_(z) if j < len(layers) - 1 else z)
        out = acts[-1]
        delta = (torch.softmax(out, dim=1) if self.task == "classification" else out).sub_(target)
        scale = -lr / x.shape[0]
        decay = 1.0 - lr * self.config.weight_decay
        for j in range(len(layers) - 1, -1, -1):
            w, b = layers[j]
            a_prev = acts[j]
            back = delta @ w if j > 0 else None  # uses w before its update
            b.add_(delta.sum(0), alpha=scale)
            w.addmm_(delta.t(), a_prev, beta=decay, alpha=scale)
            if back is not None:
                delta = back.mul_(a_prev > 0)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean loss the SGD step descends (the autograd reference)."""
        if self.task == "classification":
            return F.cross_entropy(out, target.argmax(dim=1))
        return 0.5 * ((out - target) ** 2).sum(dim=1).mean()

    def loss_gradient(self, state: ModelState, X: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray,
                      stats: FeatureStats | None = None) -> np.ndarray:
        """Flat gradient of the mean loss on raw (X, y) by autograd, weight decay excluded."""
        data = LocalData.for_schema(np.asarray(X), np.asarray(y), self.schema)
        st = self.stats_for(stats)
        x = self._scale_x(torch.from_numpy(data.X), st)
        t = self._scale_target(torch.from_numpy(data.target), st)
        flat = torch.tensor(np.asarray(state.params), requires_grad=True)
        (grad,) = torch.autograd.grad(self.loss(self._stack(x, self._views(flat)), t), flat)
        return grad.numpy()

    # -- evaluation ----------------------------------------------------------------

    def _forward(self, state: ModelState, x: torch.Tensor) -> torch.Tensor:
        params = torch.from_numpy(np.array(state.params))  # writable copy: torch wants one
        return self._stack(x, self._views(params))

    def _forward_many(self, states: Sequence[ModelState], x: torch.Tensor,
                      stats: Sequence[FeatureStats | None]) -> torch.Tensor:
        """One batched matmul per layer for all ``states``; each model's scaling is folded
        into its first layer (``W/std``, ``b - W·mean/std``) instead of scaling x per model."""
        B = len(states)
        params = torch.from_numpy(np.stack([s.params for s in states]))
        h = x.expand(B, *x.shape)
        scaled = [st for st in stats if st is not None]
        if scaled and len(scaled) != B:
            raise ValueError("either every model or none has scaling statistics")
        d = self.n_features
        pos = 0
        for j, ((o, i), _) in enumerate(self.layer_shapes):
            w = params[:, pos: pos + o * i].view(B, o, i)
            pos += o * i
            b = params[:, pos: pos + o]
            pos += o
            if j == 0 and scaled:
                inv = torch.from_numpy(np.stack([st.inv_scale32[:d] for st in scaled]))
                shift = torch.from_numpy(np.stack([st.shift32[:d] for st in scaled]))
                w = w * inv.unsqueeze(1)
                b = b - torch.bmm(w, shift.unsqueeze(2)).squeeze(2)
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if j < len(self.layer_shapes) - 1:
                h = torch.relu(h)
        if self.task == "regression" and scaled:
            std = torch.tensor([float(st.std[d]) for st in scaled], dtype=torch.float32).view(B, 1, 1)
            mean = torch.tensor([float(st.mean[d]) for st in scaled], dtype=torch.float32).view(B, 1, 1)
            h = h * std + mean
        return h

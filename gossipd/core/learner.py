"""The learner: a torch model described by a spec string, trained by SGD.

The model's parameters live in ONE flat float32 tensor; each layer's weight and
bias are views into it. Loading a received model is one ``copy_`` and the
gradient comes out flat, so the hot path has no per-parameter Python loop.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gossipd.core.spec import MODEL_SPECS, LearnerConfig, parse_model_spec
from gossipd.core.state import ModelState

__all__ = ["MODEL_SPECS", "Learner", "LearnerConfig", "LocalData", "parse_model_spec"]


@dataclass(frozen=True)
class LocalData:
    """A node's training examples as torch tensors (converted once, not per update)."""

    X: torch.Tensor
    y: torch.Tensor
    onehot: torch.Tensor  # float targets for the hand-written cross-entropy gradient

    @classmethod
    def from_numpy(cls, X: np.ndarray, y: np.ndarray, n_classes: int) -> LocalData:
        y_t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        return cls(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)), y_t,
                   F.one_hot(y_t, n_classes).to(torch.float32))

    def __len__(self) -> int:
        return int(self.y.shape[0])


class Learner:
    """Builds, trains and evaluates one model architecture.

    Not thread-safe by design: it reuses one scratch tensor. The daemon runs
    updates one at a time in a worker thread; ``lock`` guards that scratch
    tensor for the rare reader from another thread (export, evaluation).
    """

    def __init__(self, spec: str, n_features: int, n_classes: int,
                 config: LearnerConfig | None = None) -> None:
        self.spec = spec.strip()
        self.hidden = parse_model_spec(self.spec)
        if n_features < 1 or n_classes < 2:
            raise ValueError(f"need n_features >= 1 and n_classes >= 2, got {n_features}, {n_classes}")
        self.n_features = n_features
        self.n_classes = n_classes
        self.config = config or LearnerConfig()
        self.lock = threading.Lock()
        widths = (n_features, *self.hidden, n_classes)
        self.layer_shapes: list[tuple[tuple[int, int], tuple[int]]] = [
            ((o, i), (o,)) for i, o in zip(widths[:-1], widths[1:])
        ]
        self.n_params = sum(o * i + o for (o, i), _ in self.layer_shapes)
        self._flat = torch.zeros(self.n_params, dtype=torch.float32)
        self._layers = self._views(self._flat)
        self.fingerprint = self._fingerprint()

    # -- structure ---------------------------------------------------------

    def _views(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
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
        text = f"{self.spec}|in={self.n_features}|out={self.n_classes}|{shapes}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _forward(self, x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        for j, (w, b) in enumerate(layers):
            x = torch.addmm(b, x, w.t())
            if j < len(layers) - 1:
                x = torch.relu(x)
        return x

    def build_module(self, state: ModelState | None = None) -> nn.Sequential:
        """An ordinary ``nn.Sequential`` (Linear/ReLU) holding ``state``: for export."""
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

    def check(self, state: ModelState) -> None:
        if state.size != self.n_params:
            raise ValueError(f"model has {state.size} parameters, this learner expects {self.n_params}")

    def lr_at(self, age: float) -> float:
        return self.config.lr / (1.0 + age / self.config.lr_decay)

    # -- training and evaluation --------------------------------------------

    def update(self, state: ModelState, data: LocalData, rng: np.random.Generator) -> ModelState:
        """One pass of mini-batch SGD over ``data``; age grows by the examples seen."""
        self.check(state)
        n = len(data)
        if n == 0:
            return state
        bs = self.config.batch_size
        age = state.age
        with self.lock, torch.no_grad():
            self._flat.numpy()[:] = state.params  # numpy-side copy: params may be read-only
            order = torch.from_numpy(rng.permutation(n)) if n > bs else None
            for start in range(0, n, bs):
                if order is None:
                    xb, yb = data.X, data.onehot
                else:
                    idx = order[start: start + bs]
                    xb, yb = data.X[idx], data.onehot[idx]
                self._sgd_step(xb, yb, self.lr_at(age))
                age += int(xb.shape[0])
            params = self._flat.numpy().copy()
        if not np.isfinite(params).all():
            # A diverged step must not poison the network; keep the input model.
            return state
        return ModelState.owned(params, age)

    def _sgd_step(self, x: torch.Tensor, onehot: torch.Tensor, lr: float) -> None:
        """One step on the mean cross-entropy, back-propagated by hand.

        Autograd costs ~90 us per call on these tiny models, five times the
        whole step; the Linear/ReLU stack's gradient is short enough to write
        out, and ``tests/test_learner.py`` checks it against autograd.
        """
        layers = self._layers
        acts = [x]
        for j, (w, b) in enumerate(layers):
            z = torch.addmm(b, acts[-1], w.t())
            acts.append(torch.relu_(z) if j < len(layers) - 1 else z)
        delta = torch.softmax(acts[-1], dim=1).sub_(onehot)
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

    def loss_gradient(self, state: ModelState, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Flat gradient of the mean cross-entropy by autograd (the reference)."""
        flat = torch.tensor(np.asarray(state.params), requires_grad=True)
        loss = F.cross_entropy(self._forward(X, self._views(flat)), y)
        (grad,) = torch.autograd.grad(loss, flat)
        return grad.numpy()

    def logits(self, state: ModelState, X: torch.Tensor | np.ndarray) -> torch.Tensor:
        self.check(state)
        x = torch.as_tensor(X, dtype=torch.float32)
        params = torch.from_numpy(np.array(state.params))  # writable copy: torch wants one
        with torch.no_grad():
            return self._forward(x, self._views(params))

    def evaluate_many(self, states: list[ModelState], X: torch.Tensor | np.ndarray,
                      y: torch.Tensor | np.ndarray, chunk: int = 256) -> np.ndarray:
        """Accuracy of each state on (X, y), batched over models (simulator measurements).

        One batched matmul per layer for ``chunk`` models at a time instead of
        one forward pass per model: ~10x faster for a thousand small models.
        """
        x = torch.as_tensor(X, dtype=torch.float32)
        y_t = torch.as_tensor(y)
        out = np.empty(len(states))
        with torch.no_grad():
            for start in range(0, len(states), chunk):
                batch = states[start: start + chunk]
                for s in batch:
                    self.check(s)
                params = torch.from_numpy(np.stack([s.params for s in batch]))
                h = x.expand(len(batch), *x.shape)
                pos = 0
                for j, ((o, i), _) in enumerate(self.layer_shapes):
                    w = params[:, pos: pos + o * i].view(len(batch), o, i)
                    pos += o * i
                    b = params[:, pos: pos + o].unsqueeze(1)
                    pos += o
                    h = torch.baddbmm(b, h, w.transpose(1, 2))
                    if j < len(self.layer_shapes) - 1:
                        h = torch.relu(h)
                out[start: start + len(batch)] = (h.argmax(dim=2) == y_t).float().mean(dim=1).numpy()
        return out

    def evaluate(self, state: ModelState, X: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
        """Accuracy of ``state`` on (X, y)."""
        y_t = torch.as_tensor(y)
        if y_t.shape[0] == 0:
            return float("nan")
        pred = self.logits(state, X).argmax(dim=1)
        return float((pred == y_t).float().mean())

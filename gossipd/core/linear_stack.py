"""The built-in ``logreg`` / ``mlp:H1,H2,...`` learner: a Linear/ReLU stack with
hand-written backprop, in numpy (no torch).

The model's parameters live in ONE flat float32 vector; each layer's weight and
bias are views into it (``nn.Linear`` layout: the ``(out, in)`` weight, then the
bias). An update copies the received parameters once, steps on views into the
copy and hands the copy on as the new state: no per-parameter Python loop and
no scratch state shared between threads.

Classification trains on the mean cross-entropy of a softmax; regression on
half the mean squared error of the standardised target, whose gradient at the
output, ``z - t``, has the same form as the softmax's ``p - onehot``. The maths
is in :mod:`gossipd.core.linear_maths` (plain functions, batchable over many
models); ``tests/test_learner.py`` checks it against torch autograd.

Why by hand and in numpy: autograd costs ~90 us per call on these tiny models,
five times the whole SGD step, and numpy's per-call overhead is a fraction of
torch's (a digits/logreg pass over 13 examples: ~30 us in numpy against ~60 us
with torch tensors), so a daemon with a built-in model loads neither torch nor
its 200+ MB. Torch is imported only by :meth:`LinearStackLearner.build_module`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gossipd.core import linear_maths as lm
from gossipd.core.learner_base import LearnerBase
from gossipd.core.local_data import LocalData
from gossipd.core.scaling import FeatureStats, Scaling
from gossipd.core.spec import LearnerConfig, ModelSpec, Schema
from gossipd.core.state import ModelState


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
        #: ``(out, in)`` per layer.
        self.shapes = lm.layer_shapes((schema.n_features, *self.hidden, schema.n_outputs))
        self.n_params = lm.n_params(self.shapes)
        self.fingerprint = self._fingerprint()

    # -- structure ---------------------------------------------------------

    def _fingerprint(self) -> str:
        # "(o, i)x(o,)" per layer: the text the fingerprints have always hashed.
        shapes = ";".join(f"{(o, i)}x{(o,)}" for o, i in self.shapes)
        text = f"{self.model.kind}|{shapes}|{self._identity()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def layers(self, state: ModelState) -> lm.Layers:
        """``(W, b)`` per layer of ``state`` (read-only views): the network on scaled inputs."""
        self.check(state)
        return lm.layer_views(state.params, self.shapes)

    def build_module(self, state: ModelState | None = None) -> Any:
        """The same network as a ``torch.nn.Sequential`` (Linear/ReLU) holding ``state``, on
        scaled inputs: for torch users and autograd checks (imports torch; the ONNX export
        of a built-in model does not need it)."""
        import torch
        from torch import nn

        mods: list[nn.Module] = []
        for j, (o, i) in enumerate(self.shapes):
            mods.append(nn.Linear(i, o))
            if j < len(self.shapes) - 1:
                mods.append(nn.ReLU())
        module = nn.Sequential(*mods)
        if state is not None:
            self.check(state)
            torch.nn.utils.vector_to_parameters(torch.from_numpy(np.array(state.params)), module.parameters())
        return module.eval()

    # -- states --------------------------------------------------------------

    def initial_state(self) -> ModelState:
        """Age-0 parameters, identical on every node with the same ``init_seed``: zeros for
        ``logreg`` (a convex problem), else uniform in ``±1/sqrt(fan_in)`` (``nn.Linear``'s
        default range) drawn from ``numpy.random.default_rng(init_seed)``."""
        if not self.hidden:
            return ModelState.owned(np.zeros(self.n_params, np.float32), 0.0)
        rng = np.random.default_rng(self.config.init_seed)
        parts = [rng.uniform(-1.0, 1.0, o * i + o) / math.sqrt(i) for o, i in self.shapes]
        return ModelState.owned(np.concatenate(parts).astype(np.float32), 0.0)

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
        params = np.array(state.params)  # the new state's own buffer: the views below write it
        layers = lm.layer_views(params, self.shapes)
        classification = self.task == "classification"
        wd = self.config.weight_decay
        order = rng.permutation(n) if n > bs else None
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged step is caught below
            for start in range(0, n, bs):
                if order is None:
                    xb, tb = X, T
                else:
                    idx = order[start: start + bs]
                    xb, tb = X[idx], T[idx]
                lm.sgd_step(layers, xb, tb, self.lr_at(age), wd, classification)
                age += int(xb.shape[0])
        if not np.isfinite(params).all():
            # A diverged step must not poison the network; keep the input model.
            return state
        return ModelState.owned(params, age)

    # -- evaluation ----------------------------------------------------------------

    def _forward(self, state: ModelState, x: np.ndarray) -> np.ndarray:
        return lm.forward(x, lm.layer_views(state.params, self.shapes))

    def _forward_many(self, states: Sequence[ModelState], x: np.ndarray,
                      stats: Sequence[FeatureStats | None]) -> np.ndarray:
        """One batched matrix product per layer for all ``states``; each model's scaling is
        folded into its first layer (``W/std``, ``b - W·mean/std``) instead of scaling x per model."""
        params = np.stack([s.params for s in states])
        layers = lm.layer_views(params, self.shapes)
        scaled = [st for st in stats if st is not None]
        if scaled and len(scaled) != len(states):
            raise ValueError("either every model or none has scaling statistics")
        d = self.n_features
        if scaled:
            layers = lm.fold_scaling(layers, np.stack([st.shift32[:d] for st in scaled]),
                                     np.stack([st.inv_scale32[:d] for st in scaled]))
        h = lm.forward(x, layers)
        if self.task == "regression" and scaled:
            std = np.array([st.std[d] for st in scaled], dtype=np.float32).reshape(-1, 1, 1)
            mean = np.array([st.mean[d] for st in scaled], dtype=np.float32).reshape(-1, 1, 1)
            h = h * std + mean
        return h

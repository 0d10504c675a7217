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
from gossipd.core.learner_base import LearnerBase, as_float32
from gossipd.core.local_data import LocalData
from gossipd.core.scaling import FeatureStats, Scaling, scale_of
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

    def update_many(self, params: np.ndarray, ages: np.ndarray, X: np.ndarray, T: np.ndarray, counts: np.ndarray,
                    rng: np.random.Generator, mean: np.ndarray | None = None,
                    var: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`update` for ``m`` models at once, each on its own examples: model i takes one
        pass of mini-batch SGD over ``X[i, :counts[i]]`` (targets ``T[i, :counts[i]]``; rows past
        ``counts[i]`` are padding), on the same step-size schedule, in shuffled mini-batches
        when it holds more than one batch. One :func:`~gossipd.core.linear_maths.sgd_step` per
        mini-batch index serves every model that has that batch (padding masked).

        ``params`` ``(m, n_params)`` float32, ``ages`` ``(m,)``; ``mean``, ``var`` ``(m, k)``:
        each model's scaling statistics (network scaling; fixed and none need none).
        Returns new ``(params, ages, ok)``; where a pass went non-finite, ``ok`` is False and
        that model's input parameters and age come back unchanged (as :meth:`update` does).
        """
        start_ages = ages
        work = np.array(params, dtype=np.float32)
        ages = np.array(ages, dtype=np.float64)
        m, rows = X.shape[0], X.shape[1]
        present = np.arange(rows) < counts[:, None]  # (m, rows): real examples
        Xs, Ts = self._scale_many(X, T, mean, var)
        Xs *= present[..., None]  # padding is exactly 0: finite whatever the statistics
        bs = self.config.batch_size
        if rows > bs:  # more than one batch somewhere: each model's examples in its own random order
            order = np.argsort(np.where(present, rng.random((m, rows)), 2.0), axis=1)
            at = np.arange(m)[:, None]
            Xs, Ts = Xs[at, order], Ts[at, order]
        classification = self.task == "classification"
        wd = self.config.weight_decay
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged step is caught below
            for lo in range(0, int(counts.max(initial=0)), bs):
                every = lo == 0 and bool(counts.all())  # the first batch of every model: no gather
                active = np.arange(m) if every else np.flatnonzero(counts > lo)
                sizes = np.minimum(counts[active] - lo, bs)
                width = int(sizes.max())
                mask = None
                if (sizes < width).any():
                    mask = (np.arange(width) < sizes[:, None]).astype(np.float32)
                sub = work if every else work[active]
                lm.sgd_step(lm.layer_views(sub, self.shapes), Xs[active, lo: lo + width] if not every else
                            Xs[:, :width], Ts[active, lo: lo + width] if not every else Ts[:, :width],
                            self.lr_at(ages[active]), wd, classification, mask)
                if not every:
                    work[active] = sub
                ages[active] += sizes
            ok = np.isfinite(work).all(axis=1)
        if not ok.all():
            work[~ok] = params[~ok]
            ages[~ok] = np.asarray(start_ages)[~ok]
        return work, ages, ok

    def _scale_many(self, X: np.ndarray, T: np.ndarray, mean: np.ndarray | None,
                    var: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``_scale_x`` and ``_scale_target`` for ``(m, rows, ...)`` examples of ``m`` models."""
        if self.scaling.mode == "none":
            return X.astype(np.float32, copy=True), T
        if self.scaling.mode == "fixed":
            st = self.scaling.stats
            assert st is not None
            shift, inv = st.shift32[None, :], st.inv_scale32[None, :]
        else:
            if mean is None or var is None:
                raise ValueError("this learner scales by statistics the network learns: pass each model's")
            shift, inv = mean.astype(np.float32), (1.0 / scale_of(var)).astype(np.float32)
        d = self.n_features
        Xs = X - shift[:, None, :d]
        Xs *= inv[:, None, :d]
        if self.task == "regression":
            T = (T - shift[:, None, d:]) * inv[:, None, d:]
        return Xs, T

    # -- evaluation ----------------------------------------------------------------

    def _forward(self, state: ModelState, x: np.ndarray) -> np.ndarray:
        return lm.forward(x, lm.layer_views(state.params, self.shapes))

    def _forward_many(self, states: Sequence[ModelState], x: np.ndarray,
                      stats: Sequence[FeatureStats | None]) -> np.ndarray:
        scaled = [st for st in stats if st is not None]
        if scaled and len(scaled) != len(states):
            raise ValueError("either every model or none has scaling statistics")
        params = np.stack([s.params for s in states])
        if not scaled:
            return self._forward_arrays(params, x, None, None)
        return self._forward_arrays(params, x, np.stack([st.mean for st in scaled]),
                                    np.stack([st.var for st in scaled]))

    def _forward_arrays(self, params: np.ndarray, x: np.ndarray, mean: np.ndarray | None,
                        var: np.ndarray | None) -> np.ndarray:
        """User-space raw outputs ``(B, n, k)`` of the models ``params`` ``(B, n_params)`` on raw
        inputs ``x``, each scaled by its statistics ``mean``, ``var`` ``(B, k)`` (None: unscaled).
        One batched matrix product per layer; each model's scaling is folded into its first
        layer (``W/std``, ``b - W·mean/std``) instead of scaling x per model."""
        layers = lm.layer_views(params, self.shapes)
        d = self.n_features
        if mean is not None:
            assert var is not None
            std = scale_of(var)
            layers = lm.fold_scaling(layers, mean[:, :d].astype(np.float32), (1.0 / std[:, :d]).astype(np.float32))
        h = lm.forward(x, layers)
        if self.task == "regression" and mean is not None:
            h = h * std[:, d].astype(np.float32).reshape(-1, 1, 1) + mean[:, d].astype(np.float32).reshape(-1, 1, 1)
        return h

    def scores_of_arrays(self, params: np.ndarray, X: Any, y: Any, mean: np.ndarray | None = None,
                         var: np.ndarray | None = None, chunk: int = 256) -> dict[str, np.ndarray]:
        """:meth:`scores_many` for models held as arrays: ``params`` ``(B, n_params)`` and, for
        network scaling, each one's statistics ``mean``, ``var`` ``(B, k)`` (the batched
        simulator keeps every node this way). ``chunk`` models at a time bound the memory."""
        if self.scaling.mode == "fixed":
            st = self.scaling.stats
            assert st is not None
            mean, var = st.mean[None, :], st.var[None, :]
        elif self.scaling.mode == "none":
            mean = var = None
        x = as_float32(X)
        y_a = np.asarray(y)
        n = params.shape[0]
        if y_a.shape[0] == 0:
            return {m: np.full(n, np.nan) for m in self.metrics}
        out = {m: np.empty(n) for m in self.metrics}
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            mu = None if mean is None else np.broadcast_to(mean, (n, mean.shape[1]))[lo:hi]
            va = None if var is None else np.broadcast_to(var, (n, var.shape[1]))[lo:hi]
            for m, v in self._metric_arrays(self._forward_arrays(params[lo:hi], x, mu, va), y_a).items():
                out[m][lo:hi] = v
        return out

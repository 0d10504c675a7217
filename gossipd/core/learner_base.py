"""What every learner shares: local data, scaling, outputs and metrics.

A learner's network sees standardised inputs and, for regression, predicts
the standardised target; :class:`LearnerBase` applies the statistics on the
way in and out, so callers always deal in raw features and user-space
outputs (class probabilities, or target values in the data's own units).
Subclasses supply the network: ``_forward`` for one model and
``_forward_many`` for a batch of models, numpy arrays in and out (a torch
module converts at its own boundary), so that a built-in model needs no torch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gossipd.core.linear_maths import softmax
from gossipd.core.local_data import LocalData
from gossipd.core.scaling import FeatureStats, Scaling
from gossipd.core.spec import METRICS, LearnerConfig, ModelSpec, Schema, primary_metric
from gossipd.core.state import ModelState


def as_float32(X: Any) -> np.ndarray:
    """Rows as a float32 numpy array (numpy, lists or CPU torch tensors, without importing torch)."""
    return np.ascontiguousarray(np.asarray(X), dtype=np.float32)


class LearnerBase:
    """Scaling, outputs and metrics on top of a subclass's network; numpy in and out.

    Thread safety: a torch module trains in its template module's scratch
    state, so the daemon runs updates one at a time in its trainer thread;
    ``lock`` serialises that with the rare reader from another thread
    (evaluation, export). The hand-written stack keeps no scratch state.
    """

    def __init__(self, model: ModelSpec, schema: Schema, config: LearnerConfig | None,
                 scaling: Scaling | None) -> None:
        self.model = model
        self.spec = model.text
        self.schema = schema
        self.config = config or LearnerConfig()
        self.scaling = scaling or Scaling.none()
        if self.scaling.stats is not None and self.scaling.stats.size != schema.n_stat_columns:
            raise ValueError(f"fixed scaling has statistics of {self.scaling.stats.size} columns, "
                             f"the data needs {schema.n_stat_columns}")
        self.lock = threading.Lock()
        self.n_params = 0
        self.fingerprint = ""

    # -- shape and identity ----------------------------------------------------------

    @property
    def task(self) -> str:
        return self.schema.task

    @property
    def n_features(self) -> int:
        return self.schema.n_features

    @property
    def n_classes(self) -> int:
        return self.schema.n_classes

    @property
    def n_outputs(self) -> int:
        return self.schema.n_outputs

    @property
    def stat_columns(self) -> int:
        """Columns of the scaling statistics a model message carries; 0 unless the network learns them."""
        return self.schema.n_stat_columns if self.scaling.learned else 0

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS[self.task]

    def _identity(self) -> str:
        """Schema and scaling, for the fingerprint: what a model's numbers mean."""
        s = self.schema
        return (f"task={s.task}|in={'x'.join(map(str, s.input_shape))}|out={s.n_outputs}|"
                f"features={','.join(s.feature_names)}|classes={','.join(s.class_names)}|"
                f"scaling={self.scaling.tag}")

    def check(self, state: ModelState) -> None:
        if state.size != self.n_params:
            raise ValueError(f"model has {state.size} parameters, this learner expects {self.n_params}")

    def lr_at(self, age: float) -> float:
        return self.config.lr_for(self.task) / (1.0 + age / self.config.lr_decay)

    # -- scaling ------------------------------------------------------------------------

    def initial_stats(self, data: LocalData) -> FeatureStats | None:
        """The scaling statistics a node holding ``data`` starts from (None: no scaling)."""
        return self.scaling.initial(data.columns())

    def stats_for(self, stats: FeatureStats | None) -> FeatureStats | None:
        """The statistics to apply: the node's own for network scaling, the configured ones
        for fixed, none for none."""
        if self.scaling.mode == "none":
            return None
        if self.scaling.mode == "fixed":
            return self.scaling.stats
        if stats is None:
            raise ValueError("this learner scales by statistics the network learns: pass the node's stats")
        if stats.size != self.schema.n_stat_columns:
            raise ValueError(f"stats have {stats.size} columns, this learner needs {self.schema.n_stat_columns}")
        return stats

    def _training_inputs(self, state: ModelState, data: LocalData,
                         stats: FeatureStats | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Scaled features and targets (one-hot, or standardised values) for an update;
        None when there is nothing to train on."""
        self.check(state)
        if len(data) == 0:
            return None
        st = self.stats_for(stats)
        return self._scale_x(data.X, st), self._scale_target(data.target, st)

    def _scale_x(self, X: np.ndarray, st: FeatureStats | None) -> np.ndarray:
        if st is None:
            return X
        d = self.n_features
        out = X - st.shift32[:d]
        out *= st.inv_scale32[:d]
        return out

    def _scale_target(self, target: np.ndarray, st: FeatureStats | None) -> np.ndarray:
        if st is None or self.task != "regression":
            return target
        d = self.n_features
        out = target - st.shift32[d]
        out *= st.inv_scale32[d]
        return out

    def _unscale_value(self, raw: np.ndarray, st: FeatureStats | None) -> np.ndarray:
        """The network's standardised regression output -> values in the target's units."""
        if st is None:
            return raw
        d = self.n_features
        return (raw * np.float32(st.std[d]) + np.float32(st.mean[d])).astype(np.float32)

    # -- subclass hooks -------------------------------------------------------------------

    def _forward(self, state: ModelState, x: np.ndarray) -> np.ndarray:
        """The network's output ``(n, n_outputs)`` float32 on scaled inputs ``x``."""
        raise NotImplementedError

    def _forward_many(self, states: Sequence[ModelState], x: np.ndarray,
                      stats: Sequence[FeatureStats | None]) -> np.ndarray:
        """User-space raw outputs ``(B, n, k)`` for many models on RAW inputs ``x``:
        logits (classification) or target values (regression). Subclasses may batch."""
        outs = []
        for state, st in zip(states, stats):
            outs.append(self._user_raw(state, x, st))
        return np.stack(outs)

    def _user_raw(self, state: ModelState, X: np.ndarray, st: FeatureStats | None) -> np.ndarray:
        out = self._forward(state, self._scale_x(X, st))
        return self._unscale_value(out, st) if self.task == "regression" else out

    # -- outputs ------------------------------------------------------------------------------

    def logits(self, state: ModelState, X: Any, stats: FeatureStats | None = None) -> np.ndarray:
        """Raw network output ``(n, k)`` on raw features: class logits, or target values (regression)."""
        self.check(state)
        return self._user_raw(state, as_float32(X), self.stats_for(stats))

    def outputs(self, state: ModelState, X: Any, stats: FeatureStats | None = None) -> np.ndarray:
        """What the ONNX file answers: class probabilities ``(n, C)`` or values ``(n,)``."""
        raw = self.logits(state, X, stats)
        if self.task == "regression":
            return raw[:, 0]
        return softmax(raw)

    def predict(self, state: ModelState, X: Any, stats: FeatureStats | None = None) -> np.ndarray:
        """Class indices (into ``schema.class_names``) or values."""
        raw = self.logits(state, X, stats)
        if self.task == "regression":
            return raw[:, 0]
        return raw.argmax(axis=1)

    # -- metrics ----------------------------------------------------------------------------

    def _metric_arrays(self, raw: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Per-model metrics from user-space raw outputs ``(B, n, k)``."""
        if self.task == "classification":
            return {"accuracy": (raw.argmax(axis=2) == y).mean(axis=1, dtype=np.float64)}
        yd = y.astype(np.float64)
        err = raw[:, :, 0].astype(np.float64) - yd
        sse = (err * err).sum(axis=1)
        sst = float(((yd - yd.mean()) ** 2).sum())
        rmse = np.sqrt(sse / y.shape[0])
        r2 = 1.0 - sse / sst if sst > 0 else np.full_like(sse, np.nan)
        return {"rmse": rmse, "r2": r2}

    def _chunks(self, states: Sequence[ModelState], stats: Sequence[FeatureStats | None] | None,
                chunk: int) -> Iterator[tuple[Sequence[ModelState], list[FeatureStats | None]]]:
        if stats is not None and len(stats) != len(states):
            raise ValueError(f"{len(stats)} stats for {len(states)} models")
        for start in range(0, len(states), chunk):
            batch = states[start: start + chunk]
            for s in batch:
                self.check(s)
            given = stats[start: start + chunk] if stats is not None else [None] * len(batch)
            yield batch, [self.stats_for(st) for st in given]

    def scores_many(self, states: Sequence[ModelState], X: Any, y: Any,
                    stats: Sequence[FeatureStats | None] | None = None,
                    chunk: int = 256) -> dict[str, np.ndarray]:
        """Every metric of each model on (X, y), batched over models where the learner can.

        ``stats[i]`` scales model i's inputs (network scaling); None for none/fixed.
        """
        x = as_float32(X)
        y_a = np.asarray(y)
        n = len(states)
        if y_a.shape[0] == 0:
            return {m: np.full(n, np.nan) for m in self.metrics}
        out = {m: np.empty(n) for m in self.metrics}
        pos = 0
        for batch, sts in self._chunks(states, stats, chunk):
            scores = self._metric_arrays(self._forward_many(batch, x, sts), y_a)
            for m, v in scores.items():
                out[m][pos: pos + len(batch)] = v
            pos += len(batch)
        return out

    def scores(self, state: ModelState, X: Any, y: Any, stats: FeatureStats | None = None) -> dict[str, float]:
        many = self.scores_many([state], X, y, None if stats is None else [stats])
        return {m: float(v[0]) for m, v in many.items()}

    def evaluate_many(self, states: Sequence[ModelState], X: Any, y: Any,
                      stats: Sequence[FeatureStats | None] | None = None,
                      chunk: int = 256) -> np.ndarray:
        """The headline metric (accuracy, or RMSE for regression) of each model."""
        return self.scores_many(states, X, y, stats, chunk)[primary_metric(self.task)]

    def evaluate(self, state: ModelState, X: Any, y: Any, stats: FeatureStats | None = None) -> float:
        """The headline metric of ``state`` on (X, y): accuracy, or RMSE; NaN on no rows."""
        return self.scores(state, X, y, stats)[primary_metric(self.task)]

"""The learner interface and the one place a spec becomes a learner.

A learner owns one model architecture for one data :class:`Schema`: it makes
the initial parameters, trains a :class:`ModelState` on a node's
:class:`LocalData` and scores states. Two implementations:

- :class:`~gossipd.core.linear_stack.LinearStackLearner` (``logreg``,
  ``mlp:...``): hand-written backprop over one flat tensor, the fast path the
  simulator's large runs depend on;
- :class:`~gossipd.core.torch_module.ModuleLearner` (``cnn`` and any user
  ``torch.nn.Module``): autograd through ``torch.func.functional_call``.

Only the second imports torch, and only when one is made: a node with a
built-in model runs on numpy alone.

Everything a node, a driver or the exporter needs is in :class:`Learner`; they
never look behind it. Inputs are raw features (numpy or torch); the learner
applies the model's scaling (:mod:`gossipd.core.scaling`) itself.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from gossipd.core.local_data import LocalData
from gossipd.core.linear_stack import LinearStackLearner
from gossipd.core.scaling import FeatureStats, Scaling
from gossipd.core.spec import MODEL_SPECS, LearnerConfig, ModelSpec, Schema, parse_model_spec
from gossipd.core.state import ModelState

__all__ = [
    "MODEL_SPECS", "Learner", "LearnerConfig", "LinearStackLearner", "LocalData", "make_learner", "parse_model_spec",
]


class Learner(Protocol):
    """What nodes, simulators, daemons and the exporter use of a learner.

    ``stats`` arguments are the node's scaling statistics; they matter only
    for network-learned scaling (``scaling.learned``), where they are required.
    """

    spec: str
    schema: Schema
    config: LearnerConfig
    scaling: Scaling
    n_params: int
    fingerprint: str
    lock: threading.Lock

    @property
    def task(self) -> str: ...
    @property
    def n_features(self) -> int: ...
    @property
    def n_classes(self) -> int: ...
    @property
    def metrics(self) -> tuple[str, ...]: ...
    @property
    def stat_columns(self) -> int: ...

    def initial_state(self) -> ModelState: ...
    def initial_stats(self, data: LocalData) -> FeatureStats | None: ...
    def stats_for(self, stats: FeatureStats | None) -> FeatureStats | None: ...
    def check(self, state: ModelState) -> None: ...
    def lr_at(self, age: float) -> float: ...

    def update(self, state: ModelState, data: LocalData, rng: np.random.Generator,
               stats: FeatureStats | None = None) -> ModelState: ...

    def logits(self, state: ModelState, X: Any, stats: FeatureStats | None = None) -> np.ndarray: ...
    def outputs(self, state: ModelState, X: Any, stats: FeatureStats | None = None) -> np.ndarray: ...
    def predict(self, state: ModelState, X: Any, stats: FeatureStats | None = None) -> np.ndarray: ...
    def scores(self, state: ModelState, X: Any, y: Any, stats: FeatureStats | None = None) -> dict[str, float]: ...
    def scores_many(self, states: Sequence[ModelState], X: Any, y: Any,
                    stats: Sequence[FeatureStats | None] | None = None, chunk: int = 256) -> dict[str, np.ndarray]: ...
    def evaluate(self, state: ModelState, X: Any, y: Any, stats: FeatureStats | None = None) -> float: ...
    def evaluate_many(self, states: Sequence[ModelState], X: Any, y: Any,
                      stats: Sequence[FeatureStats | None] | None = None, chunk: int = 256) -> np.ndarray: ...

    def build_module(self, state: ModelState | None = None) -> Any:
        """A ``torch.nn.Module`` computing the network on scaled inputs (imports torch;
        the exporter uses it for torch modules)."""
        ...


def make_learner(spec: str | ModelSpec, schema: Schema, config: LearnerConfig | None = None, *,
                 scaling: Scaling | None = None) -> Learner:
    """The learner for ``spec`` on data shaped by ``schema``.

    ``scaling`` defaults to none (the library applies no scaling unless told;
    the CLI and the daemon default to ``network``). Raises ValueError (a
    :class:`~gossipd.core.plugin.PluginError` for plugins) naming the problem.
    """
    model = parse_model_spec(spec) if isinstance(spec, str) else spec
    if model.hand_written:
        return LinearStackLearner(model, schema, config, scaling)
    from gossipd.core.torch_module import ModuleLearner  # imports torch

    return ModuleLearner(model, schema, config, scaling)

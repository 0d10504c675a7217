"""Baselines on the same model, data split and test set as a gossip run.

- centralised: one model trained on the pooled training data (the ceiling);
- local: every node trains alone on its own part, never communicating (the floor);
- fedavg: a server averages the clients' locally updated models, weighted by
  data size, every round (McMahan et al. 2017), with McMahan's knobs: a share
  C (``fedavg_fraction``) of the available clients per round, E local epochs
  (``fedavg_epochs``, 5) of mini-batches of B (``fedavg_batch``, 10), so a
  client with 13 examples takes 10 steps a round, not one full-batch step.
  Each participant costs two transfers a round: the server sends the whole
  model down, the client uploads its model under the network's codec and, with
  partitions, only a random ``subsample`` of them (as a gossip push would); the
  server averages each partition over the clients that sent it and keeps the
  rest. Bytes are counted both ways with the gossip's own encoder
  (``sim/sizes.py``).

Scaling follows the gossip run's: with network-learned statistics the
centralised model and the FedAvg server use the exact statistics of all
training data (what a server would compute), and each local-only node its own.

Metrics are the task's (accuracy, or RMSE and R² for regression), named as in
the gossip series: ``mean_<metric>``, ``min_<metric>``, ``max_<metric>``.

Drops and delays are not applied to baselines. Availability is, to FedAvg: a
client takes part in round ``r`` (the cycle ``[r-1, r)``) only if a ``--churn``
trace has it online for all of it, or, without a trace, with probability
``online``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from gossipd.core import codec as codecs
from gossipd.core.learner import Learner, LocalData, make_learner
from gossipd.core.partition import Layout, carried_count
from gossipd.core.scaling import FeatureStats
from gossipd.core.state import ModelState
from gossipd.data import Dataset
from gossipd.sim.churn import Trace
from gossipd.sim.config import SimulationConfig
from gossipd.sim.sizes import MessageSizes

CENTRALISED_EPOCHS = 30


def _eval_points(cycles: int, every: int) -> set[int]:
    return {c for c in range(cycles + 1) if c % every == 0 or c == cycles}


def _pooled_stats(learner: Learner, datas: list[LocalData]) -> FeatureStats | None:
    if not learner.scaling.learned:
        return None
    return FeatureStats.of(np.concatenate([d.columns() for d in datas]))


def summarise(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """``{"accuracy": per-node array}`` -> ``mean_accuracy``, ``min_accuracy``, ``max_accuracy``."""
    out: dict[str, float] = {}
    for name, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        # The mean of equal values can round past them in the last bit; keep min <= mean <= max.
        out.update({f"mean_{name}": min(max(float(values.mean()), lo), hi), f"min_{name}": lo, f"max_{name}": hi})
    return out


def centralised(dataset: Dataset, learner: Learner, rng: np.random.Generator,
                epochs: int = CENTRALISED_EPOCHS) -> dict[str, Any]:
    data = LocalData.for_schema(dataset.X_train, dataset.y_train, dataset.schema)
    stats = _pooled_stats(learner, [data])
    X_test, y_test = dataset.X_test, dataset.y_test
    state = learner.initial_state()
    series = []
    for epoch in range(1, epochs + 1):
        state = learner.update(state, data, rng, stats)
        series.append({"epoch": epoch, **learner.scores(state, X_test, y_test, stats)})
    final = {m: series[-1][m] for m in learner.metrics}
    return {**final, "epochs": epochs, "series": series}


def local(dataset: Dataset, learner: Learner, datas: list[LocalData], cycles: int, every: int,
          rng: np.random.Generator) -> dict[str, Any]:
    X_test, y_test = dataset.X_test, dataset.y_test
    states = [learner.initial_state()] * len(datas)
    stats = [learner.initial_stats(d) for d in datas] if learner.scaling.learned else None
    own = stats or [None] * len(datas)
    points = _eval_points(cycles, every)
    series = []
    for cycle in range(cycles + 1):
        if cycle > 0:
            states = [learner.update(s, d, rng, st) for s, d, st in zip(states, datas, own)]
        if cycle in points:
            scores = learner.scores_many(states, X_test, y_test, stats)
            series.append({"cycle": cycle, **summarise(scores), "messages": 0, "bytes": 0})
    return {"series": series, "final": series[-1]}


@dataclass(frozen=True)
class FedAvgSettings:
    """McMahan's knobs and the communication settings FedAvg shares with gossip."""

    epochs: int = 5  # E
    batch: int = 10  # B
    fraction: float = 1.0  # C: share of the available clients per round
    participation: float = 1.0  # without a trace: the chance a client is available in a round
    codec: str = "fp32"
    partitions: int = 1
    subsample: float = 1.0

    @classmethod
    def of(cls, config: SimulationConfig) -> FedAvgSettings:
        return cls(config.fedavg_epochs, config.fedavg_batch, config.fedavg_fraction, config.online, config.codec,
                   config.partitions, config.subsample)


def fedavg(dataset: Dataset, learner: Learner, datas: list[LocalData], rounds: int, every: int,
           settings: FedAvgSettings, rng: np.random.Generator, trace: Trace | None = None) -> dict[str, Any]:
    """FedAvg for ``rounds`` rounds (one a cycle), scored every ``every``; see the module doc."""
    sizes_of = np.array([len(d) for d in datas], dtype=np.float64)
    stats = _pooled_stats(learner, datas)
    X_test, y_test = dataset.X_test, dataset.y_test
    # The clients' local passes use B; the learner is otherwise the gossip's.
    local = make_learner(learner.spec, learner.schema, dataclasses.replace(learner.config, batch_size=settings.batch),
                         scaling=learner.scaling)
    sizes = MessageSizes(learner, settings.partitions)
    layout = Layout(learner.n_params, settings.partitions) if settings.partitions > 1 else None
    carried = carried_count(settings.partitions, settings.subsample)
    down_bytes = sizes.model_bytes(settings.codec)
    state = learner.initial_state()
    points = _eval_points(rounds, every)
    messages = up = down = 0
    series = []
    for rnd in range(rounds + 1):
        if rnd > 0:
            if trace is not None:
                available = np.array([i for i in range(len(datas)) if trace.online_during(i, rnd - 1.0, rnd)])
            else:
                available = np.flatnonzero(rng.random(len(datas)) < settings.participation)
                if available.size == 0:
                    available = np.array([rng.integers(len(datas))])
            if available.size:
                k = max(1, round(settings.fraction * available.size))
                chosen = np.sort(rng.choice(available, size=k, replace=False)) if k < available.size else available
                sent = ModelState.owned(codecs.roundtrip(settings.codec, state.params).copy(), state.age)
                totals = np.zeros(learner.n_params, np.float64)
                weights = np.zeros(learner.n_params, np.float64)
                ages = []
                for i in chosen:
                    model = sent
                    for _ in range(settings.epochs):
                        model = local.update(model, datas[i], rng, stats)
                    ages.append(model.age)
                    index = layout.choose(rng, carried) if layout is not None else None
                    coords = layout.coordinates(index) if layout is not None and index is not None else slice(None)
                    values = model.params[coords]
                    totals[coords] += sizes_of[i] * codecs.roundtrip(settings.codec, np.ascontiguousarray(values))
                    weights[coords] += sizes_of[i]
                    up += sizes.model_bytes(settings.codec, index)
                    down += down_bytes
                # Partitions nobody sent keep the server's values.
                params = np.where(weights > 0, totals / np.maximum(weights, 1e-300), state.params)
                state = ModelState(params.astype(np.float32), max(max(ages), state.age))
                messages += 2 * len(chosen)
        if rnd in points:
            scores = learner.scores(state, X_test, y_test, stats)
            series.append({"cycle": rnd, **summarise({m: np.array([v]) for m, v in scores.items()}),
                           "messages": messages, "bytes": up + down, "upload_bytes": up, "download_bytes": down})
    return {"series": series, "final": series[-1],
            "settings": dataclasses.asdict(settings)}


def run_baselines(config: SimulationConfig, dataset: Dataset, learner: Learner, datas: list[LocalData],
                  trace: Trace | None = None) -> dict[str, Any]:
    root = np.random.SeedSequence([config.seed, 0xBA5E])
    rngs = {name: np.random.default_rng(s) for name, s in zip(("centralised", "local", "fedavg"), root.spawn(3))}
    out: dict[str, Any] = {}
    for name in config.baselines:
        if name == "centralised":
            out[name] = centralised(dataset, learner, rngs[name])
        elif name == "local":
            out[name] = local(dataset, learner, datas, config.cycles, config.eval_every, rngs[name])
        elif name == "fedavg":
            out[name] = fedavg(dataset, learner, datas, config.cycles, config.eval_every, FedAvgSettings.of(config),
                               rngs[name], trace)
    return out

"""Baselines on the same model, data split and test set as a gossip run.

- centralised: one model trained on the pooled training data (the ceiling);
- local: every node trains alone on its own part, never communicating (the floor);
- fedavg: a server averages the clients' locally updated models, weighted by
  data size, every round (McMahan et al. 2017); each participating client costs
  two model transfers per round (download and upload).

Scaling follows the gossip run's: with network-learned statistics the
centralised model and the FedAvg server use the exact statistics of all
training data (what a server would compute), and each local-only node its own.

Metrics are the task's (accuracy, or RMSE and R² for regression), named as in
the gossip series: ``mean_<metric>``, ``min_<metric>``, ``max_<metric>``.

Churn, drops and delays are not applied to baselines; ``online`` is, to FedAvg,
as the chance that a client takes part in a round.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gossipd.core.learner import Learner, LocalData
from gossipd.core.scaling import FeatureStats
from gossipd.core.state import ModelState
from gossipd.data import Dataset
from gossipd.sim.config import SimulationConfig

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
    X_test, y_test = torch.from_numpy(dataset.X_test), torch.from_numpy(dataset.y_test)
    state = learner.initial_state()
    series = []
    for epoch in range(1, epochs + 1):
        state = learner.update(state, data, rng, stats)
        series.append({"epoch": epoch, **learner.scores(state, X_test, y_test, stats)})
    final = {m: series[-1][m] for m in learner.metrics}
    return {**final, "epochs": epochs, "series": series}


def local(dataset: Dataset, learner: Learner, datas: list[LocalData], cycles: int, every: int,
          rng: np.random.Generator) -> dict[str, Any]:
    X_test, y_test = torch.from_numpy(dataset.X_test), torch.from_numpy(dataset.y_test)
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


def fedavg(dataset: Dataset, learner: Learner, datas: list[LocalData], rounds: int, every: int,
           participation: float, message_bytes: int, rng: np.random.Generator) -> dict[str, Any]:
    sizes = np.array([len(d) for d in datas], dtype=np.float64)
    stats = _pooled_stats(learner, datas)
    X_test, y_test = torch.from_numpy(dataset.X_test), torch.from_numpy(dataset.y_test)
    state = learner.initial_state()
    points = _eval_points(rounds, every)
    messages = 0
    series = []
    for rnd in range(rounds + 1):
        if rnd > 0:
            chosen = np.flatnonzero(rng.random(len(datas)) < participation)
            if chosen.size == 0:
                chosen = np.array([rng.integers(len(datas))])
            updated = [learner.update(state, datas[i], rng, stats) for i in chosen]
            weights = sizes[chosen] / sizes[chosen].sum()
            params = np.einsum("k,kp->p", weights.astype(np.float32), np.stack([u.params for u in updated]))
            state = ModelState(params, max(u.age for u in updated))
            messages += 2 * len(chosen)
        if rnd in points:
            scores = learner.scores(state, X_test, y_test, stats)
            series.append({"cycle": rnd, **summarise({m: np.array([v]) for m, v in scores.items()}),
                           "messages": messages, "bytes": messages * message_bytes})
    return {"series": series, "final": series[-1]}


def run_baselines(config: SimulationConfig, dataset: Dataset, learner: Learner, datas: list[LocalData],
                  message_bytes: int) -> dict[str, Any]:
    root = np.random.SeedSequence([config.seed, 0xBA5E])
    rngs = {name: np.random.default_rng(s) for name, s in zip(("centralised", "local", "fedavg"), root.spawn(3))}
    out: dict[str, Any] = {}
    for name in config.baselines:
        if name == "centralised":
            out[name] = centralised(dataset, learner, rngs[name])
        elif name == "local":
            out[name] = local(dataset, learner, datas, config.cycles, config.eval_every, rngs[name])
        elif name == "fedavg":
            out[name] = fedavg(dataset, learner, datas, config.cycles, config.eval_every, config.online,
                               message_bytes, rngs[name])
    return out

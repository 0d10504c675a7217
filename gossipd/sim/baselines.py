"""Baselines on the same model, data split and test set as a gossip run.

- centralised: one model trained on the pooled training data (the ceiling);
- local: every node trains alone on its own part, never communicating (the floor);
- fedavg: a server averages the clients' locally updated models, weighted by
  data size, every round (McMahan et al. 2017); each participating client costs
  two model transfers per round (download and upload).

Churn, drops and delays are not applied to baselines; ``online`` is, to FedAvg,
as the chance that a client takes part in a round.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gossipd.data import Dataset
from gossipd.core.learner import Learner, LocalData
from gossipd.core.state import ModelState
from gossipd.sim.config import SimulationConfig

CENTRALISED_EPOCHS = 30


def _eval_points(cycles: int, every: int) -> set[int]:
    return {c for c in range(cycles + 1) if c % every == 0 or c == cycles}


def centralised(dataset: Dataset, learner: Learner, rng: np.random.Generator,
                epochs: int = CENTRALISED_EPOCHS) -> dict[str, Any]:
    data = LocalData.from_numpy(dataset.X_train, dataset.y_train, dataset.n_classes)
    X_test, y_test = torch.from_numpy(dataset.X_test), torch.from_numpy(dataset.y_test)
    state = learner.initial_state()
    series = []
    for epoch in range(1, epochs + 1):
        state = learner.update(state, data, rng)
        series.append({"epoch": epoch, "accuracy": learner.evaluate(state, X_test, y_test)})
    return {"accuracy": series[-1]["accuracy"], "epochs": epochs, "series": series}


def local(dataset: Dataset, learner: Learner, datas: list[LocalData], cycles: int, every: int,
          rng: np.random.Generator) -> dict[str, Any]:
    X_test, y_test = torch.from_numpy(dataset.X_test), torch.from_numpy(dataset.y_test)
    states = [learner.initial_state()] * len(datas)
    points = _eval_points(cycles, every)
    series = []
    for cycle in range(cycles + 1):
        if cycle > 0:
            states = [learner.update(s, d, rng) for s, d in zip(states, datas)]
        if cycle in points:
            accs = learner.evaluate_many(states, X_test, y_test)
            series.append({"cycle": cycle, "mean_accuracy": float(accs.mean()),
                           "min_accuracy": float(accs.min()), "max_accuracy": float(accs.max()),
                           "messages": 0, "bytes": 0})
    return {"series": series, "final": series[-1]}


def fedavg(dataset: Dataset, learner: Learner, datas: list[LocalData], rounds: int, every: int,
           participation: float, message_bytes: int, rng: np.random.Generator) -> dict[str, Any]:
    sizes = np.array([len(d) for d in datas], dtype=np.float64)
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
            updated = [learner.update(state, datas[i], rng) for i in chosen]
            weights = sizes[chosen] / sizes[chosen].sum()
            params = np.einsum("k,kp->p", weights.astype(np.float32), np.stack([u.params for u in updated]))
            state = ModelState(params, max(u.age for u in updated))
            messages += 2 * len(chosen)
        if rnd in points:
            acc = learner.evaluate(state, X_test, y_test)
            series.append({"cycle": rnd, "mean_accuracy": acc, "min_accuracy": acc, "max_accuracy": acc,
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

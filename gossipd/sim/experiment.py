"""What both simulation engines build from a SimulationConfig, so that they agree.

The exact event engine (``simulation.py``) and the batched one (``batched.py``)
run the same experiment: the same data set and learner, the same split of the
training data over the nodes (from the same seed), the same protocol knobs,
the same cut, the same message sizes and the same overlay measurements. Those
live here, once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gossipd.core.learner import Learner, make_learner
from gossipd.core.node import GossipConfig
from gossipd.core.spec import parse_input_shape, parse_task
from gossipd.data import Dataset, DataError, load_dataset, make_scaling, split_indices
from gossipd.overlay import Edges, edge_array, indegree_stats, overlay_metrics
from gossipd.sim.churn import ChurnError, Trace, make_trace
from gossipd.sim.config import ConfigError, SimulationConfig, parse_cut
from peer_sampling.cyclon import CyclonConfig


def load_config_dataset(config: SimulationConfig) -> Dataset:
    """The data set ``config`` names (a ConfigError naming --dataset otherwise)."""
    try:
        return load_dataset(config.dataset, label_column=config.label_column, task=parse_task(config.task),
                            input_shape=parse_input_shape(config.input_shape) if config.input_shape else None)
    except DataError as exc:
        raise ConfigError("dataset", f"--dataset: {exc}") from None


def build_learner(config: SimulationConfig, dataset: Dataset) -> Learner:
    """The learner ``config`` names for ``dataset`` (a ConfigError naming the flag otherwise)."""
    try:
        scaling = make_scaling(config.scaling, dataset.schema)
    except DataError as exc:
        raise ConfigError("scaling", f"--scaling: {exc}") from None
    try:
        return make_learner(config.model, dataset.schema, config.learner_config(dataset.task), scaling=scaling)
    except ValueError as exc:
        raise ConfigError("model", f"--model: {exc}") from None


def seed_streams(config: SimulationConfig) -> tuple[np.random.SeedSequence, np.random.SeedSequence,
                                                     np.random.SeedSequence]:
    """(split, nodes, overlay) seed sequences: the split and a static overlay are the same
    in both engines for a given seed."""
    part_ss, node_ss, overlay_ss = np.random.SeedSequence(config.seed).spawn(3)
    return part_ss, node_ss, overlay_ss


def prepare(config: SimulationConfig, dataset: Dataset | None = None) -> tuple[
        Dataset, Learner, list[np.ndarray], np.random.SeedSequence, np.random.SeedSequence]:
    """What both engines build first, in this order: the data set (unless given), the
    learner (checked against ``--partitions``) and the split of the training data over the nodes; then the seed streams
    left for the nodes and the overlay."""
    if dataset is None:
        dataset = load_config_dataset(config)
    part_ss, node_ss, overlay_ss = seed_streams(config)
    learner = build_learner(config, dataset)
    if config.partitions > learner.n_params:
        raise ConfigError("partitions", f"--partitions {config.partitions}: the model has only "
                                        f"{learner.n_params} parameters")
    parts = split_indices(dataset.y_train, config.nodes, config.split, np.random.default_rng(part_ss))
    return dataset, learner, parts, node_ss, overlay_ss


def churn_trace(config: SimulationConfig) -> Trace | None:
    """When each node is online under ``--churn`` (None without it; a ConfigError naming --churn)."""
    if config.churn is None:
        return None
    try:
        return make_trace(config.churn, config.nodes, float(config.cycles), config.seed)
    except ChurnError as exc:
        raise ConfigError("churn", f"--churn: {exc}") from None


def overlay_error(config: SimulationConfig, exc: ValueError) -> ConfigError:
    """A topology that cannot be built on this many nodes, as a ConfigError naming --sampler."""
    return ConfigError("sampler", f"--sampler {config.sampler} with --nodes {config.nodes}: {exc}")


def network_rng(config: SimulationConfig) -> np.random.Generator:
    """Delays and losses."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, 0xC0FFEE]))


def churn_rng(config: SimulationConfig) -> np.random.Generator:
    """Who is online, and who crashes: both engines draw the same sequence from it."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, 0xC4A2]))


def gossip_config(config: SimulationConfig) -> GossipConfig:
    """The nodes' gossip knobs (Δ = 1 cycle)."""
    return GossipConfig(interval=1.0, jitter=config.jitter, merge=config.merge, codec=config.codec,
                        partitions=config.partitions, subsample=config.subsample, flow=config.flow)


def cyclon_config(config: SimulationConfig) -> CyclonConfig:
    return CyclonConfig(view_size=config.view_size, shuffle_length=config.shuffle_length,
                        interval=config.shuffle_interval, jitter=config.jitter,
                        reseed_interval=config.reseed_interval)


def cut_sides(config: SimulationConfig, n: int) -> np.ndarray:
    """Bool per node: on the cut-off side of --cut (all False without one)."""
    side = np.zeros(n, dtype=bool)
    if config.cut is not None:
        fraction = parse_cut(config.cut)[0]
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xC07]))
        far = min(n - 1, max(1, round(fraction * n)))  # two non-empty sides
        side[rng.choice(n, size=far, replace=False)] = True
    return side


def run_description(dataset: Dataset, learner: Learner, message_bytes: int) -> dict[str, Any]:
    """The part of a result that says what was simulated: data set, task, metrics, model."""
    return {
        "dataset": {
            "name": dataset.name,
            "train": int(len(dataset.y_train)),
            "test": int(len(dataset.y_test)),
            "features": dataset.n_features,
            "classes": dataset.n_classes,
            "task": learner.task,
        },
        "task": learner.task,
        "metrics": list(learner.metrics),
        "model": {"spec": learner.spec, "params": learner.n_params, "fingerprint": learner.fingerprint,
                  "message_bytes": message_bytes, "scaling": learner.scaling.mode, "lr": learner.config.lr,
                  "optimizer": learner.config.optimizer},
    }


def overlay_entry(config: SimulationConfig, side: np.ndarray, edges: Edges | None, alive: np.ndarray,
                  cut_active: bool) -> dict[str, Any]:
    """The overlay part of a measurement: dead links and the largest component among live
    nodes (``edges``: live nodes' view entries, None for the implicit full graph), and under
    --cut whether it is active and how many view entries point across it, counting only
    links that can carry a message now."""
    entry: dict[str, Any] = {}
    arr = None if edges is None else edge_array(edges)
    if config.cut is not None:
        entry["cut_active"] = cut_active
        crossing = 0 if arr is None else int((side[arr[:, 0]] != side[arr[:, 1]]).sum())
        entry["cut_links"] = crossing  # view entries pointing across the cut (usable or not)
        if cut_active and arr is not None:
            arr = arr[side[arr[:, 0]] == side[arr[:, 1]]]
    entry.update(overlay_metrics(arr, alive))
    if cut_active and arr is None:  # full graph: each side is one component
        far = int((alive & side).sum())
        entry["largest_component_fraction"] = max(far, int(alive.sum()) - far) / max(int(alive.sum()), 1)
    return entry


def indegree_entry(n: int, edges: Edges | None, alive: np.ndarray) -> dict[str, Any]:
    """``{"indegree": {mean, std, max}}`` over live nodes (None edges: the full graph)."""
    if edges is None:  # full graph: every live node is in every live view
        live = int(alive.sum())
        return {"indegree": {"mean": float(live - 1), "std": 0.0, "max": float(live - 1)}}
    return {"indegree": indegree_stats(n, edges, alive)}

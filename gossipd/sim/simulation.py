"""The simulator: real GossipNodes on a virtual clock and an in-memory network.

Time is measured in cycles (one cycle = one gossip period Δ = 1.0). Every
source of randomness is a Generator derived from ``SimulationConfig.seed``, so
the same config gives the same run, event for event.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from gossipd import wire
from gossipd.core.learner import Learner, LocalData, make_learner
from gossipd.core.messages import ModelMessage, PeerDescriptor, Send, ShuffleReply, ShuffleRequest
from gossipd.core.node import GossipConfig, GossipNode
from gossipd.core.spec import parse_input_shape, parse_task
from gossipd.data import Dataset, DataError, load_dataset, make_scaling, split_indices
from gossipd.overlay import indegree_stats, overlay_metrics
from gossipd.sim.baselines import run_baselines, summarise
from gossipd.sim.config import BASELINES, ConfigError, SimulationConfig, parse_kill
from peer_sampling.cyclon import Cyclon, CyclonConfig
from peer_sampling.topology import StaticSampler, build_overlay

# Event kinds; at equal times a cycle boundary runs first, then deliveries, then ticks.
_CYCLE, _FAIL, _DELIVER, _TICK = 0, 1, 2, 3


@dataclass
class _Traffic:
    messages: int = 0
    bytes: int = 0
    sampling_messages: int = 0
    sampling_bytes: int = 0


@dataclass
class Simulation:
    """Build with :meth:`create`, then :meth:`run`."""

    config: SimulationConfig
    dataset: Dataset
    learner: Learner
    nodes: list[GossipNode]
    progress: Callable[[int], None] | None = None
    traffic: _Traffic = field(default_factory=_Traffic)
    index: dict[str, int] = field(init=False)  # address -> position in ``nodes``

    def __post_init__(self) -> None:
        self.index = {node.address: i for i, node in enumerate(self.nodes)}

    @classmethod
    def create(cls, config: SimulationConfig, dataset: Dataset | None = None) -> Simulation:
        config.validate()
        if dataset is None:
            try:
                dataset = load_dataset(config.dataset, label_column=config.label_column, task=parse_task(config.task),
                                       input_shape=parse_input_shape(config.input_shape) if config.input_shape else None)
            except DataError as exc:
                raise ConfigError("dataset", f"--dataset: {exc}") from None
        root = np.random.SeedSequence(config.seed)
        part_ss, node_ss, overlay_ss = root.spawn(3)
        learner = build_learner(config, dataset)
        parts = split_indices(dataset.y_train, config.nodes, config.split, np.random.default_rng(part_ss))
        addresses = [f"n{i}" for i in range(config.nodes)]
        node_rngs = [np.random.default_rng(s) for s in node_ss.spawn(config.nodes)]
        try:
            samplers = _make_samplers(config, addresses, node_rngs, np.random.default_rng(overlay_ss))
        except ValueError as exc:  # a topology that cannot be built on this many nodes
            raise ConfigError("sampler", f"--sampler {config.sampler} with --nodes {config.nodes}: {exc}") from None
        gossip = GossipConfig(interval=1.0, jitter=config.jitter, merge=config.merge)
        initial = learner.initial_state()
        nodes = [
            GossipNode(
                address=addresses[i],
                learner=learner,
                data=LocalData.for_schema(dataset.X_train[p], dataset.y_train[p], dataset.schema),
                sampler=samplers[i],
                config=gossip,
                rng=node_rngs[i],
                state=initial,
            )
            for i, p in enumerate(parts)
        ]
        return cls(config, dataset, learner, nodes)

    # -- the event loop ------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg = self.config
        started = time.perf_counter()
        n = len(self.nodes)
        net_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xC0FFEE]))
        churn_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xC4A2]))
        index = self.index
        alive = np.ones(n, dtype=bool)
        online = churn_rng.random(n) < cfg.online if cfg.online < 1.0 else np.ones(n, dtype=bool)
        kill = parse_kill(cfg.kill, cfg.cycles) if cfg.kill else None
        X_test = torch.from_numpy(self.dataset.X_test)
        y_test = torch.from_numpy(self.dataset.y_test)
        learned = self.learner.scaling.learned
        sizes = _MessageSizes(self.learner)
        traffic = self.traffic
        series: list[dict[str, Any]] = []

        heap: list[tuple[float, int, int, int, Any]] = []
        seq = 0
        scheduled = [math.inf] * n

        def push(t: float, kind: int, target: int, payload: Any) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (t, kind, seq, target, payload))

        def schedule_tick(i: int) -> None:
            t = self.nodes[i].next_wakeup()
            if t < scheduled[i]:
                scheduled[i] = t
                push(t, _TICK, i, None)

        def send_all(src: int, sends: list[Send], now: float) -> None:
            for s in sends:
                msg = s.message
                if isinstance(msg, ModelMessage):
                    traffic.messages += 1
                    traffic.bytes += sizes.model
                else:
                    traffic.sampling_messages += 1
                    traffic.sampling_bytes += sizes.shuffle(len(msg.entries))
                if cfg.drop and net_rng.random() < cfg.drop:
                    continue
                target = index.get(s.peer)
                if target is None:
                    continue
                push(now + net_rng.random() * cfg.delay, _DELIVER, target, (src, msg))

        for c in range(cfg.cycles + 1):
            push(float(c), _CYCLE, c, None)
        for i in range(n):
            schedule_tick(i)

        end = float(cfg.cycles)
        while heap:
            now, kind, _, target, payload = heapq.heappop(heap)
            if now > end:
                break
            if kind == _TICK:
                if now != scheduled[target]:
                    continue  # superseded by an earlier wake-up
                scheduled[target] = math.inf
                if not alive[target]:
                    continue
                node = self.nodes[target]
                if online[target]:
                    send_all(target, node.on_tick(now), now)
                    schedule_tick(target)
                else:
                    scheduled[target] = now + 1.0  # look again next cycle
                    push(now + 1.0, _TICK, target, None)
            elif kind == _DELIVER:
                src, msg = payload
                if not (alive[target] and online[target]):
                    if alive[src]:
                        push(now + net_rng.random() * cfg.delay, _FAIL, src, self.nodes[target].address)
                    continue
                node = self.nodes[target]
                if isinstance(msg, ModelMessage):
                    node.on_model(now, msg)
                elif isinstance(msg, ShuffleRequest):
                    reply = node.on_shuffle_request(now, msg)
                    if reply is not None:
                        send_all(target, [Send(msg.sender, reply)], now)
                elif isinstance(msg, ShuffleReply):
                    node.on_shuffle_reply(now, msg)
                schedule_tick(target)
            elif kind == _FAIL:
                if alive[target]:
                    self.nodes[target].on_send_failed(now, payload)
                    schedule_tick(target)
            else:  # _CYCLE
                cycle = target
                if kill is not None and cycle == kill[1]:
                    live = np.flatnonzero(alive)
                    victims = churn_rng.choice(live, size=int(round(kill[0] * len(live))), replace=False)
                    alive[victims] = False
                if cfg.online < 1.0 and cycle > 0:
                    redraw = churn_rng.random(n) < 1.0 / cfg.session
                    online[redraw] = churn_rng.random(int(redraw.sum())) < cfg.online
                if cycle % cfg.eval_every == 0 or cycle == cfg.cycles:
                    series.append(self._measure(cycle, alive, X_test, y_test, learned))
                if self.progress is not None:
                    self.progress(cycle)

        final = dict(series[-1])
        final.update(self._indegree(alive))
        result: dict[str, Any] = {
            "config": asdict(self.config),
            "dataset": {
                "name": self.dataset.name,
                "train": int(len(self.dataset.y_train)),
                "test": int(len(self.dataset.y_test)),
                "features": self.dataset.n_features,
                "classes": self.dataset.n_classes,
                "task": self.learner.task,
            },
            "task": self.learner.task,
            "metrics": list(self.learner.metrics),
            "model": {"spec": self.learner.spec, "params": self.learner.n_params,
                      "fingerprint": self.learner.fingerprint, "message_bytes": sizes.model,
                      "scaling": self.learner.scaling.mode, "lr": self.learner.config.lr,
                      "optimizer": self.learner.config.optimizer},
            "series": series,
            "final": final,
        }
        result["gossip_wall_seconds"] = time.perf_counter() - started
        return result

    # -- measurements -----------------------------------------------------------

    def _measure(self, cycle: int, alive: np.ndarray, X_test: torch.Tensor, y_test: torch.Tensor,
                 learned: bool) -> dict[str, Any]:
        live = [self.nodes[i] for i in np.flatnonzero(alive)]
        states = [node.state for node in live]
        stats = [node.stats for node in live] if learned else None
        scores = self.learner.scores_many(states, X_test, y_test, stats)  # type: ignore[arg-type]
        entry: dict[str, Any] = {"cycle": cycle, **summarise(scores)}
        entry.update({
            "mean_age": float(np.mean([s.age for s in states])),  # type: ignore[union-attr]
            "messages": self.traffic.messages,
            "bytes": self.traffic.bytes,
            "sampling_messages": self.traffic.sampling_messages,
            "sampling_bytes": self.traffic.sampling_bytes,
            "live_nodes": int(alive.sum()),
        })
        entry.update(overlay_metrics(self._edges(alive), alive))
        return entry

    def _edges(self, alive: np.ndarray) -> list[tuple[int, int]] | None:
        """Live nodes' view entries as (holder, target) indices; None for the implicit full graph."""
        if self.config.sampler == "full":
            return None
        index = self.index
        return [(i, index[a]) for i in np.flatnonzero(alive) for a in self.nodes[i].sampler.peers()]

    def _indegree(self, alive: np.ndarray) -> dict[str, Any]:
        edges = self._edges(alive)
        if edges is None:  # full graph: every live node is in every live view
            live = int(alive.sum())
            return {"indegree": {"mean": float(live - 1), "std": 0.0, "max": float(live - 1)}}
        return {"indegree": indegree_stats(len(self.nodes), edges, alive)}


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


class _MessageSizes:
    """Bytes a message would take on the wire, encoded once per shape and cached."""

    def __init__(self, learner: Learner) -> None:
        self.model = wire.encoded_model_size(learner.n_params, "n0000", learner.fingerprint, "sim",
                                             learner.stat_columns)
        self._shuffle: dict[int, int] = {}

    def shuffle(self, entries: int) -> int:
        size = self._shuffle.get(entries)
        if size is None:
            probe = ShuffleRequest("n0000", tuple(PeerDescriptor(f"n{i:04d}", 1) for i in range(entries)))
            size = self._shuffle[entries] = wire.encoded_size(probe, cluster="sim")
        return size


def _make_samplers(config: SimulationConfig, addresses: list[str], rngs: list[np.random.Generator],
                   overlay_rng: np.random.Generator) -> list[Any]:
    if config.sampler == "cyclon":
        cyclon = CyclonConfig(view_size=config.view_size, shuffle_length=config.shuffle_length,
                              interval=config.shuffle_interval, jitter=config.jitter)
        seeds = addresses[: min(config.seeds, len(addresses))]
        return [Cyclon(a, seeds, cyclon, np.random.default_rng(r.integers(2**63))) for a, r in zip(addresses, rngs)]
    overlay = build_overlay(config.sampler, addresses, overlay_rng)
    return [StaticSampler(a, overlay[a], np.random.default_rng(r.integers(2**63))) for a, r in zip(addresses, rngs)]


def simulate(config: SimulationConfig, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run gossip learning and the requested baselines on the same split."""
    started = time.perf_counter()
    sim = Simulation.create(config)
    sim.progress = progress
    result = sim.run()
    # The nodes' own data, so that baselines train on exactly the gossip split.
    datas = [node.data for node in sim.nodes]
    result["baselines"] = run_baselines(config, sim.dataset, sim.learner, datas, result["model"]["message_bytes"])
    result["wall_seconds"] = time.perf_counter() - started
    return result


__all__ = ["BASELINES", "ConfigError", "Simulation", "SimulationConfig", "simulate"]

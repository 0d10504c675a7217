"""The simulator: real GossipNodes on a virtual clock and an in-memory network.

Time is measured in cycles (one cycle = one gossip period Δ = 1.0). Every
source of randomness is a Generator derived from ``SimulationConfig.seed``, so
the same config gives the same run, event for event.

Availability: ``--online``/``--session`` redraw each node's state at random,
``--churn`` replays a trace (``gossipd.sim.churn``: a file, or the diurnal
generator) with every change at its exact time. Offline nodes neither send
nor receive.

The network fails the way the daemon's does (``peer_sampling.outcome``): every
request gets exactly one answer at its sender. A request or its reply that is
lost (``--drop``, or crossing a ``--cut``) is a TIMEOUT at the sender once
``timeout`` cycles have passed since it left; the receiver of a request whose
reply is lost has acted on it and never learns. A crashed or offline receiver
refuses the connection: UNREACHABLE, one round trip later. A delivered model
is acknowledged (DELIVERED) one round trip later.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gossipd.core.learner import Learner, LocalData
from gossipd.core.messages import ModelMessage, Outcome, Send, ShuffleReply
from gossipd.core.node import GossipNode, RejectedMessage
from gossipd.data import Dataset
from gossipd.sim.attackers import AttackingNode, parse_attackers
from gossipd.sim.baselines import run_baselines, summarise
from gossipd.sim.batched import BatchedSimulation
from gossipd.sim.batched_scope import batched_unsupported
from gossipd.sim.churn import Trace
from gossipd.sim.config import BASELINES, ConfigError, SimulationConfig, parse_cut, parse_kill
from gossipd.sim.experiment import (churn_rng, churn_trace, cut_sides, cyclon_config, gossip_config, indegree_entry,
                                    network_rng, overlay_entry, overlay_error, prepare, run_description)
from gossipd.sim.sizes import MessageSizes
from peer_sampling.cyclon import Cyclon
from peer_sampling.topology import StaticSampler, build_overlay

# Event kinds; at equal times a cycle boundary runs first, then availability changes
# (--churn), outcomes, requests arriving, responses arriving, and ticks last.
_CYCLE, _CHURN, _OUTCOME, _DELIVER, _RESPONSE, _TICK = 0, 1, 2, 3, 4, 5


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
    honest: np.ndarray = field(init=False)  # bool per node: not an attacker (measurements use these only)
    side: np.ndarray = field(init=False)  # bool per node: on the cut-off side of --cut
    trace: Trace | None = None  # --churn: when each node is online

    def __post_init__(self) -> None:
        self.index = {node.address: i for i, node in enumerate(self.nodes)}
        self.honest = np.array([not isinstance(node, AttackingNode) for node in self.nodes])
        self.side = cut_sides(self.config, len(self.nodes))

    @classmethod
    def create(cls, config: SimulationConfig, dataset: Dataset | None = None) -> Simulation:
        config.validate()
        dataset, learner, parts, node_ss, overlay_ss = prepare(config, dataset)
        addresses = [f"n{i}" for i in range(config.nodes)]
        node_rngs = [np.random.default_rng(s) for s in node_ss.spawn(config.nodes)]
        try:
            samplers = _make_samplers(config, addresses, node_rngs, np.random.default_rng(overlay_ss))
        except ValueError as exc:
            raise overlay_error(config, exc) from None
        gossip = gossip_config(config)
        trace = churn_trace(config)
        initial = learner.initial_state()
        attack = parse_attackers(config.attackers) if config.attackers is not None else None
        attacking = np.zeros(config.nodes, dtype=bool)
        if attack is not None:
            attack_ss = np.random.SeedSequence([config.seed, 0xBAD]).spawn(config.nodes + 1)
            attacking = attack.choose(config.nodes, np.random.default_rng(attack_ss[-1]))
        nodes: list[GossipNode] = []
        for i, p in enumerate(parts):
            common: dict[str, Any] = dict(
                address=addresses[i],
                learner=learner,
                data=LocalData.for_schema(dataset.X_train[p], dataset.y_train[p], dataset.schema),
                sampler=samplers[i],
                config=gossip,
                rng=node_rngs[i],
                state=initial,
            )
            if attacking[i]:
                assert attack is not None
                nodes.append(AttackingNode(**common, attack=attack.attack,
                                           attack_rng=np.random.default_rng(attack_ss[i])))
            else:
                nodes.append(GossipNode(**common))
        return cls(config, dataset, learner, nodes, trace=trace)

    # -- the event loop ------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg = self.config
        started = time.perf_counter()
        n = len(self.nodes)
        nodes = self.nodes
        net_rng = network_rng(cfg)
        churn = churn_rng(cfg)
        index = self.index
        alive = np.ones(n, dtype=bool)
        trace = self.trace
        if trace is not None:
            online = np.array([trace.online(i, 0.0) for i in range(n)], dtype=bool)
        else:
            online = churn.random(n) < cfg.online if cfg.online < 1.0 else np.ones(n, dtype=bool)
        kill = parse_kill(cfg.kill, cfg.cycles) if cfg.kill else None
        _, cut_start, cut_end = parse_cut(cfg.cut) if cfg.cut else (0.0, math.inf, math.inf)
        side = self.side
        timeout = cfg.timeout
        X_test = self.dataset.X_test
        y_test = self.dataset.y_test
        learned = self.learner.scaling.learned
        sizes = MessageSizes(self.learner, cfg.partitions)
        traffic = self.traffic
        series: list[dict[str, Any]] = []

        heap: list[tuple[float, int, int, int, Any]] = []
        seq = 0
        scheduled = [math.inf] * n

        def push(t: float, kind: int, target: int, payload: Any) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (t, kind, seq, target, payload))

        def schedule_tick(i: int, now: float) -> None:
            # A timer that fell due while the node was offline runs now, once: never at
            # its past due time (time would run backwards and replay every missed period).
            t = max(nodes[i].next_wakeup(), now)
            if t < scheduled[i]:
                scheduled[i] = t
                push(t, _TICK, i, None)

        def delay() -> float:
            return net_rng.random() * cfg.delay

        def lost() -> bool:
            return bool(cfg.drop) and net_rng.random() < cfg.drop

        def cut_between(a: int, b: int, now: float) -> bool:
            return cut_start <= now < cut_end and side[a] != side[b]

        def count(msg: Any) -> None:
            if isinstance(msg, ModelMessage):
                traffic.messages += 1
                traffic.bytes += sizes.of(msg)
            else:
                traffic.sampling_messages += 1
                traffic.sampling_bytes += sizes.shuffle(len(msg.entries))

        def send_all(src: int, sends: list[Send], now: float) -> None:
            for s in sends:
                count(s.message)
                target = index.get(s.peer)
                if target is None:  # no such host
                    push(now, _OUTCOME, src, (s.peer, Outcome.UNREACHABLE))
                elif lost():
                    push(now + timeout, _OUTCOME, src, (s.peer, Outcome.TIMEOUT))
                else:
                    push(now + delay(), _DELIVER, target, (src, s.message, now))

        def respond(dst: int, src: int, answer: ShuffleReply | Outcome, sent_at: float, now: float) -> None:
            """``dst`` answers ``src``'s request; a lost or late answer is a timeout at ``src``."""
            if isinstance(answer, ShuffleReply):
                count(answer)
            arrives = now + delay()
            if lost() or arrives > sent_at + timeout:
                push(sent_at + timeout, _OUTCOME, src, (nodes[dst].address, Outcome.TIMEOUT))
            else:
                push(arrives, _RESPONSE, src, (dst, answer, sent_at))

        for c in range(cfg.cycles + 1):
            push(float(c), _CYCLE, c, None)
        if trace is not None:
            for t, i, up in trace.transitions(float(cfg.cycles)):
                push(t, _CHURN, i, up)
        for i in range(n):
            schedule_tick(i, 0.0)

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
                if online[target]:
                    send_all(target, nodes[target].on_tick(now), now)
                    schedule_tick(target, now)
                elif trace is None:
                    scheduled[target] = now + 1.0  # look again next cycle
                    push(now + 1.0, _TICK, target, None)
                # (with a trace, coming back online schedules the tick)
            elif kind == _CHURN:
                online[target] = payload
                if payload and alive[target]:  # back: overdue timers fire now
                    scheduled[target] = now
                    push(now, _TICK, target, None)
            elif kind == _DELIVER:
                src, msg, sent_at = payload
                if cut_between(src, target, now):
                    push(sent_at + timeout, _OUTCOME, src, (nodes[target].address, Outcome.TIMEOUT))
                    continue
                if not (alive[target] and online[target]):  # connection refused, one round trip later
                    push(now + delay(), _OUTCOME, src, (nodes[target].address, Outcome.UNREACHABLE))
                    continue
                node = nodes[target]
                answer: ShuffleReply | Outcome = Outcome.DELIVERED
                if isinstance(msg, ModelMessage):
                    try:
                        node.on_model(now, msg)
                    except RejectedMessage:
                        answer = Outcome.REFUSED
                    node.take_discards()  # counted in node.counters; nobody to log to here
                    send_all(target, node.react(now), now)  # a token account forwards at once
                else:
                    reply = node.on_shuffle_request(now, msg)
                    if reply is not None:
                        answer = reply
                respond(target, src, answer, sent_at, now)
                schedule_tick(target, now)
            elif kind == _RESPONSE:
                dst, answer, sent_at = payload
                if not (alive[target] and online[target]):
                    continue  # the sender's process is gone: nobody to tell
                if cut_between(dst, target, now):
                    push(sent_at + timeout, _OUTCOME, target, (nodes[dst].address, Outcome.TIMEOUT))
                    continue
                if isinstance(answer, ShuffleReply):
                    nodes[target].on_shuffle_reply(now, answer)
                else:
                    nodes[target].on_outcome(now, nodes[dst].address, answer)
                schedule_tick(target, now)
            elif kind == _OUTCOME:
                if alive[target] and online[target]:
                    peer, outcome = payload
                    nodes[target].on_outcome(now, peer, outcome)
                    schedule_tick(target, now)
            else:  # _CYCLE
                cycle = target
                if kill is not None and cycle == kill[1]:
                    live = np.flatnonzero(alive)
                    victims = churn.choice(live, size=int(round(kill[0] * len(live))), replace=False)
                    alive[victims] = False
                if cfg.online < 1.0 and cycle > 0:
                    redraw = churn.random(n) < 1.0 / cfg.session
                    online[redraw] = churn.random(int(redraw.sum())) < cfg.online
                if cycle % cfg.eval_every == 0 or cycle == cfg.cycles:
                    series.append(self._measure(cycle, alive, X_test, y_test, learned, cut_start <= cycle < cut_end))
                if self.progress is not None:
                    self.progress(cycle)

        final = dict(series[-1])
        final.update(self._indegree(alive))
        final["counters"] = self._honest_counters()
        result: dict[str, Any] = {
            "config": asdict(self.config),
            "engine": {"name": "exact"},
            # a whole model under the codec (a push of some partitions is smaller)
            **run_description(self.dataset, self.learner, sizes.model_bytes(cfg.codec)),
            "honest_nodes": int(self.honest.sum()),
            "series": series,
            "final": final,
        }
        result["gossip_wall_seconds"] = time.perf_counter() - started
        return result

    # -- measurements -----------------------------------------------------------

    def _measure(self, cycle: int, alive: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 learned: bool, cut_active: bool) -> dict[str, Any]:
        """Scores and age over live honest nodes; the overlay over all live nodes
        (attackers are part of it), counting only links that can carry a message now."""
        live = [self.nodes[i] for i in np.flatnonzero(alive & self.honest)]
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
        edges = self._edges(alive)
        entry.update(overlay_entry(self.config, self.side, edges, alive, cut_active))
        if self.config.attackers is not None:
            if cut_active and edges is not None:  # only links that can carry a message now
                edges = [(i, j) for i, j in edges if self.side[i] == self.side[j]]
            entry["attacker_view_share"] = self._attacker_share(edges, alive)
        return entry

    def _attacker_share(self, edges: list[tuple[int, int]] | None, alive: np.ndarray) -> float:
        """Share of live honest nodes' view entries that point at attackers."""
        honest = self.honest
        if edges is None:  # full graph: every live node is in every view
            live_honest = int((alive & honest).sum())
            return float((alive & ~honest).sum()) / max(int(alive.sum()) - 1, 1) if live_honest else 0.0
        from_honest = [j for i, j in edges if honest[i]]
        return sum(1 for j in from_honest if not honest[j]) / len(from_honest) if from_honest else 0.0

    def _honest_counters(self) -> dict[str, int]:
        """Every honest node's counters, summed."""
        total: dict[str, int] = {}
        for i in np.flatnonzero(self.honest):
            for key, value in self.nodes[i].counters.as_dict().items():
                total[key] = total.get(key, 0) + value
        return total

    def _edges(self, alive: np.ndarray) -> list[tuple[int, int]] | None:
        """Live nodes' view entries as (holder, target) indices; None for the implicit full graph."""
        if self.config.sampler == "full":
            return None
        index = self.index
        return [(i, index[a]) for i in np.flatnonzero(alive) for a in self.nodes[i].sampler.peers()]

    def _indegree(self, alive: np.ndarray) -> dict[str, Any]:
        return indegree_entry(len(self.nodes), self._edges(alive), alive)


def _make_samplers(config: SimulationConfig, addresses: list[str], rngs: list[np.random.Generator],
                   overlay_rng: np.random.Generator) -> list[Any]:
    if config.sampler == "cyclon":
        cyclon = cyclon_config(config)
        seeds = addresses[: min(config.seeds, len(addresses))]
        return [Cyclon(a, seeds, cyclon, np.random.default_rng(r.integers(2**63))) for a, r in zip(addresses, rngs)]
    overlay = build_overlay(config.sampler, addresses, overlay_rng)
    return [StaticSampler(a, overlay[a], np.random.default_rng(r.integers(2**63))) for a, r in zip(addresses, rngs)]


def simulate(config: SimulationConfig, progress: Callable[[int], None] | None = None,
             note: Callable[[str], None] | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    """Run gossip learning and the requested baselines on the same split.

    ``config.engine`` picks the engine: ``exact`` (this module's event loop), ``batched``
    (``batched.py``) or ``auto``: batched when it simulates every option set, else exact,
    telling ``note`` why in one line. The result's ``engine`` says which one ran.
    ``dataset``: the config's data set, already loaded (many runs on one data set load it once)."""
    started = time.perf_counter()
    config.validate()
    why = batched_unsupported(config)
    sim: Simulation | BatchedSimulation
    if config.engine == "batched" or (config.engine == "auto" and why is None):
        sim = BatchedSimulation.create(config, dataset)
        sim.progress = progress
        result = sim.run()
        # the nodes' own data for the baselines, only when there are any (a thousand small copies)
        datas = sim.models.local_data() if config.baselines else []
    else:
        if config.engine == "auto" and note is not None:
            note(f"simulating with the exact engine: the batched one does not simulate {why}")
        sim = Simulation.create(config, dataset)
        sim.progress = progress
        if config.gossip:
            result = sim.run()
        else:  # the baselines only (an experiment's FedAvg cells): same split, same trace
            result = {"config": asdict(config), "engine": {"name": "exact"},
                      **run_description(sim.dataset, sim.learner, MessageSizes(sim.learner).model_bytes(config.codec))}
        if config.engine == "auto":
            result["engine"]["why"] = why
        # The nodes' own data, so that baselines train on exactly the gossip split.
        datas = [node.data for node in sim.nodes]
    result["baselines"] = run_baselines(config, sim.dataset, sim.learner, datas, sim.trace)
    result["wall_seconds"] = time.perf_counter() - started
    return result


__all__ = ["BASELINES", "ConfigError", "Simulation", "SimulationConfig", "simulate"]

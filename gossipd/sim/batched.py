"""The batched simulation engine: all nodes in arrays, time in slices.

The same experiment as the exact engine (``simulation.py``: same data, split,
learner, protocol, failures and measurements; ``experiment.py`` builds both),
run by processing the events of a time slice together. Its semantics are
written down in ``docs/architecture.md`` ("The batched engine"); in short:

- time runs in slices of ``SLICE`` cycles (0.1: ten per gossip period);
  events keep their exact times, which decide timeouts, cuts and the order
  of a node's events within a slice;
- a slice is processed in three phases: answers (outcomes and shuffle replies
  reach their senders), deliveries (models and shuffle requests reach their
  receivers), then timers (pushes, shuffles, reseeds, at their own times);
- everything a slice produces is handled in a later slice: a message is never
  delivered in the slice it was sent in (a delay shorter than what is left of
  the slice is stretched to its end), except a token account's forward, sent
  while the slice's models are delivered, which is merged in that slice if it
  arrives in it (``_Loop.merge_now``; a model passes on several hops in one
  slice, as in the exact engine);
- the events of one node in a phase are applied in time order, in sub-rounds
  (``batched_events.subrounds``); every event acts on one node only, so a
  sub-round is one vectorised step over distinct nodes;
- models are the exception: a node merges one a slice, the oldest in its
  inbox, and any that has waited ``INBOX_SLICES`` slices (``_Loop.merge``).

Models are merged and trained by the core's maths over arrays
(``batched_models.py``), Cyclon runs on arrays (``batched_cyclon.py``), and
every failure is reported as the exact engine reports it (an ``Outcome`` at
the sender: a timeout ``timeout`` cycles after a lost request or reply, a
refused connection one trip after reaching a dead or offline node, an
acknowledgement one round trip after a delivered model).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gossipd.core.linear_stack import LinearStackLearner
from gossipd.core.node import Counters
from gossipd.data import Dataset
from gossipd.sim.baselines import summarise
from gossipd.sim.batched_cyclon import CODE, FAILED, STRIKE, VOUCH_ONLY, BatchedCyclon, Requests, StaticPeers
from gossipd.sim.batched_events import MODEL, OUTCOME, REPLY, REQUEST, Calendar, Events, per_cycle, subrounds
from gossipd.sim.batched_flow import TokenAccounts
from gossipd.sim.batched_models import NodeModels, Snapshot
from gossipd.sim.batched_scope import batched_unsupported
from gossipd.sim.churn import Trace
from gossipd.sim.config import ConfigError, SimulationConfig, parse_cut, parse_kill
from gossipd.sim.experiment import (churn_rng, churn_trace, cut_sides, cyclon_config, gossip_config, indegree_entry,
                                    network_rng, overlay_entry, overlay_error, prepare, run_description)
from gossipd.sim.sizes import MessageSizes
from peer_sampling.outcome import Outcome
from peer_sampling.topology import build_overlay

#: Slice width, in cycles (gossip periods).
SLICE = 0.1
#: A model that reaches a node after its first of a slice waits in the node's inbox; after
#: this many slices it is merged whatever else is waiting (``_Loop.merge``).
INBOX_SLICES = 2

DELIVERED, TIMEOUT, UNREACHABLE = CODE[Outcome.DELIVERED], CODE[Outcome.TIMEOUT], CODE[Outcome.UNREACHABLE]
_SNAPSHOT = ("params", "age", "count", "mean", "var", "parts", "part_ages", "with_stats")


@dataclass
class BatchedSimulation:
    """Build with :meth:`create`, then :meth:`run` (the exact engine's interface)."""

    config: SimulationConfig
    dataset: Dataset
    learner: LinearStackLearner
    models: NodeModels
    peers: BatchedCyclon | StaticPeers
    rng: np.random.Generator  # the nodes' draws: timers, peers, training order, shuffle samples
    trace: Trace | None = None  # --churn: when each node is online
    progress: Callable[[int], None] | None = None
    #: After :meth:`run`: every node's counters (``Counters`` fields), one array each.
    counters: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def create(cls, config: SimulationConfig, dataset: Dataset | None = None) -> BatchedSimulation:
        config.validate()
        why = batched_unsupported(config)
        if why is not None:
            raise ConfigError("engine", f"--engine batched does not simulate {why}; use --engine exact or auto")
        dataset, learner, parts, node_ss, overlay_ss = prepare(config, dataset)
        assert isinstance(learner, LinearStackLearner)
        models = NodeModels(learner, dataset, parts, gossip_config(config))
        rng = np.random.default_rng(node_ss)
        peers: BatchedCyclon | StaticPeers
        if config.sampler == "cyclon":
            peers = BatchedCyclon(config.nodes, config.seeds, cyclon_config(config), rng)
        else:
            addresses = [f"n{i}" for i in range(config.nodes)]
            try:
                overlay = build_overlay(config.sampler, addresses, np.random.default_rng(overlay_ss))
            except ValueError as exc:
                raise overlay_error(config, exc) from None
            peers = StaticPeers(overlay, {a: i for i, a in enumerate(addresses)})
        return cls(config, dataset, learner, models, peers, rng, churn_trace(config))

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        loop = _Loop(self)
        series = loop.run()
        final = dict(series[-1])
        final.update(indegree_entry(self.config.nodes, self.peers.edges(np.flatnonzero(loop.alive)), loop.alive))
        self.counters = loop.counters
        final["counters"] = {k: int(v.sum()) for k, v in loop.counters.items()}
        result: dict[str, Any] = {
            "config": asdict(self.config),
            "engine": {"name": "batched", "slice": SLICE},
            **run_description(self.dataset, self.learner, loop.push_bytes),
            "honest_nodes": self.config.nodes,
            "series": series,
            "final": final,
        }
        result["gossip_wall_seconds"] = time.perf_counter() - started
        return result


class _Loop:
    """One run's clock, network and bookkeeping around the nodes' arrays."""

    def __init__(self, sim: BatchedSimulation) -> None:
        cfg = self.cfg = sim.config
        n = cfg.nodes
        self.sim, self.models, self.peers, self.rng = sim, sim.models, sim.peers, sim.rng
        self.per_cycle = per_cycle(SLICE)
        self.calendar = Calendar(self.per_cycle)
        self.net = network_rng(cfg)
        self.churn = churn_rng(cfg)
        self.alive = np.ones(n, dtype=bool)
        # A trace is asked at each event's time (``up``, ``timers``); otherwise the churn state is
        # drawn here and re-drawn at cycle boundaries.
        self.trace = sim.trace.arrays() if sim.trace is not None else None
        self.online = self.churn.random(n) < cfg.online if cfg.online < 1.0 else np.ones(n, dtype=bool)
        self.kill = parse_kill(cfg.kill, cfg.cycles) if cfg.kill else None
        _, self.cut_start, self.cut_end = parse_cut(cfg.cut) if cfg.cut else (0.0, math.inf, math.inf)
        self.side = cut_sides(cfg, n)
        # GossipNode: first push somewhere in the first period (Δ = 1).
        self.next_gossip = self.rng.uniform(0.0, 1.0, n)
        # An offline node looks again one cycle after a timer fell due (the exact engine's re-check).
        self.retry = np.full(n, -math.inf)
        self.counters = {k: np.zeros(n, dtype=np.int64) for k in Counters().as_dict()}
        self.traffic = {"messages": 0, "bytes": 0, "sampling_messages": 0, "sampling_bytes": 0}
        self.sizes = MessageSizes(sim.learner, cfg.partitions)
        self.push_bytes = self.sizes.model_bytes(cfg.codec)  # a whole model under the codec
        self.shuffle_bytes = np.array([self.sizes.shuffle(k) for k in range(cfg.shuffle_length + 1)], dtype=np.int64)
        # Acknowledgements change nothing at a static overlay's sender unless a cut can turn one into a timeout.
        self.acks = self.peers.shuffles or cfg.cut is not None
        self.inbox: Events | None = None  # models that reached a node after its first of a slice
        self.tokens = TokenAccounts.of(cfg.flow, n)  # None under plain push
        # Token accounts: forwards arriving within the slice being delivered (merge_now) and the
        # nodes that merged in it.
        self.soon: list[Events] | None = None
        self.busy = np.zeros(n, dtype=bool)
        self.series: list[dict[str, Any]] = []

    # -- the clock ----------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        for k in range(cfg.cycles * self.per_cycle):
            if k % self.per_cycle == 0:
                self.cycle(k // self.per_cycle)
            events = self.calendar.pop(k)
            self.answers(events.get(REPLY), events.get(OUTCOME), k)
            self.deliveries(events.get(MODEL), events.get(REQUEST), k)
            self.timers((k + 1) / self.per_cycle, k)
        # what arrived before the end is merged before the last measurement
        self.merge(None, cfg.cycles * self.per_cycle - 1, flush=True)
        self.cycle(cfg.cycles)
        return self.series

    def cycle(self, c: int) -> None:
        """What the exact engine does at a cycle boundary: crashes, churn, measurements."""
        cfg = self.cfg
        if self.kill is not None and c == self.kill[1]:
            live = np.flatnonzero(self.alive)
            self.alive[self.churn.choice(live, size=int(round(self.kill[0] * len(live))), replace=False)] = False
        if cfg.online < 1.0 and c > 0:
            redraw = self.churn.random(cfg.nodes) < 1.0 / cfg.session
            self.online[redraw] = self.churn.random(int(redraw.sum())) < cfg.online
        if c % cfg.eval_every == 0 or c == cfg.cycles:
            self.series.append(self.measure(c))
        if self.sim.progress is not None:
            self.sim.progress(c)

    def measure(self, c: int) -> dict[str, Any]:
        live = np.flatnonzero(self.alive)
        scores = self.models.scores(live, self.sim.dataset.X_test, self.sim.dataset.y_test)
        entry: dict[str, Any] = {"cycle": c, **summarise(scores)}
        entry.update({"mean_age": float(np.mean(self.models.age[live])), **self.traffic,
                      "live_nodes": int(self.alive.sum())})
        entry.update(overlay_entry(self.cfg, self.side, self.peers.edges(live), self.alive,
                                   self.cut_start <= c < self.cut_end))
        return entry

    # -- the network ----------------------------------------------------------------------

    def delays(self, m: int) -> np.ndarray:
        return self.net.random(m) * self.cfg.delay

    def lost(self, m: int) -> np.ndarray:
        if not self.cfg.drop:
            return np.zeros(m, dtype=bool)
        return self.net.random(m) < self.cfg.drop

    def crosses_cut(self, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (self.cut_start <= t) & (t < self.cut_end) & (self.side[a] != self.side[b])

    def up(self, nodes: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Alive and online at the events' times (a trace's sessions to the instant; otherwise
        the slice's churn state, re-drawn at cycle boundaries as the exact engine does)."""
        if self.trace is not None:
            return self.alive[nodes] & self.trace.online(nodes, t)
        return self.alive[nodes] & self.online[nodes]

    def outcome(self, k: int, dst: np.ndarray, peer: np.ndarray, code: int, t: np.ndarray,
                sent_at: np.ndarray | None = None) -> None:
        """``dst`` learns ``code`` about its request to ``peer`` at ``t``. With ``sent_at``
        it is an answer travelling back (a cut can still turn it into a timeout)."""
        travels = sent_at is not None
        self.calendar.add(OUTCOME, Events(
            t=t, dst=dst, peer=peer, code=np.full(len(t), code, dtype=np.int64),
            travels=np.full(len(t), travels), sent_at=sent_at if sent_at is not None else t), k + 1)

    def answer(self, k: int, src: np.ndarray, dst: np.ndarray, sent_at: np.ndarray,
               t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``dst`` answers ``src``'s request at ``t``: where the answer is lost or late, a
        timeout at ``src``; returns (arrival times, which ones do arrive)."""
        arrives = t + self.delays(len(t))
        fails = self.lost(len(t)) | (arrives > sent_at + self.cfg.timeout)
        if fails.any():
            self.outcome(k, src[fails], dst[fails], TIMEOUT, sent_at[fails] + self.cfg.timeout)
        return arrives, ~fails

    def send(self, k: int, kind: str, src: np.ndarray, dst: np.ndarray, now: np.ndarray,
             **payload: np.ndarray) -> None:
        """Requests leave ``src`` at ``now``: lost ones time out, the others arrive later."""
        lost = self.lost(len(src))
        if lost.any():
            self.outcome(k, src[lost], dst[lost], TIMEOUT, now[lost] + self.cfg.timeout)
            keep = np.flatnonzero(~lost)
            src, dst, now = src[keep], dst[keep], now[keep]
            payload = {f: v[keep] for f, v in payload.items()}
        ev = Events(t=now + self.delays(len(src)), src=src, dst=dst, sent_at=now, **payload)
        if kind == MODEL and self.soon is not None:  # a forward: merged in this slice if it arrives in it
            soon = ev["t"] < (k + 1) / self.per_cycle
            if soon.any():
                self.soon.append(ev.take(np.flatnonzero(soon)))
                ev = ev.take(np.flatnonzero(~soon))
        self.calendar.add(kind, ev, k + 1)

    def woken(self, dst: np.ndarray, t: np.ndarray) -> None:
        """A node that handles an event runs its overdue timers then (the exact engine wakes
        it after every event): only matters for a node back online before its next look."""
        np.minimum.at(self.retry, dst, t)

    # -- phase 1: answers reach their senders ------------------------------------------------

    def answers(self, replies: Events | None, outcomes: Events | None, k: int) -> None:
        timeout = self.cfg.timeout
        o = _nothing(outcomes)
        if o is not None:
            o = o.take(np.flatnonzero(self.up(o["dst"], o["t"])))  # the sender's process is gone: nobody to tell
            cut = o["travels"] & self.crosses_cut(o["peer"], o["dst"], o["t"])
            if cut.any():
                self.outcome(k, o["dst"][cut], o["peer"][cut], TIMEOUT, o["sent_at"][cut] + timeout)
                o = o.take(np.flatnonzero(~cut))
            code = o["code"]
            for name, hit in (("send_failures", FAILED[code]), ("timeouts", STRIKE[code]),
                              ("busy", code == CODE[Outcome.BUSY])):
                np.add.at(self.counters[name], o["dst"][hit], 1)
        r = _nothing(replies)
        if r is not None:
            r = r.take(np.flatnonzero(self.up(r["dst"], r["t"])))
            cut = self.crosses_cut(r["src"], r["dst"], r["t"])
            if cut.any():
                self.outcome(k, r["dst"][cut], r["src"][cut], TIMEOUT, r["sent_at"][cut] + timeout)
                r = r.take(np.flatnonzero(~cut))
        no = len(o) if o is not None else 0
        dst = np.concatenate([o["dst"] if o is not None else _EMPTY, r["dst"] if r is not None else _EMPTY])
        t = np.concatenate([o["t"] if o is not None else _EMPTYF, r["t"] if r is not None else _EMPTYF])
        self.woken(dst, t)
        if not isinstance(self.peers, BatchedCyclon):
            return  # a static overlay does nothing with answers but count them
        cyclon = self.peers
        # A node whose answers are all acknowledgements and replies only vouches for peers (the
        # books) and takes replies in (the view and ``known``): the two orders are kept apart, in
        # fewer sub-rounds. A node with any other outcome (a failure touches both) takes all its
        # answers in one time order.
        mixed = np.zeros(0, dtype=np.int64)
        if o is not None and not VOUCH_ONLY[o["code"]].all():
            other = np.zeros(self.cfg.nodes, dtype=bool)
            other[o["dst"][~VOUCH_ONLY[o["code"]]]] = True
            mixed = np.flatnonzero(other[dst])
        if mixed.size:
            for idx in subrounds(dst[mixed], t[mixed]):
                idx = mixed[idx]
                oi, ri = idx[idx < no], idx[idx >= no] - no
                if oi.size:
                    assert o is not None
                    cyclon.on_outcome(o["dst"][oi], o["peer"][oi], o["code"][oi])
                if ri.size:
                    assert r is not None
                    cyclon.on_reply(r["dst"][ri], r["src"][ri], r["entries"][ri], r["ages"][ri], r["n_entries"][ri],
                                    r["sent"][ri], r["n_sent"][ri])
            rest = np.ones(len(dst), dtype=bool)
            rest[mixed] = False
            rest = np.flatnonzero(rest)
        else:
            rest = np.arange(len(dst))
        if rest.size == 0:
            return
        peer = np.concatenate([o["peer"] if o is not None else _EMPTY, r["src"] if r is not None else _EMPTY])
        for idx in subrounds(dst[rest], t[rest]):
            idx = rest[idx]
            cyclon.vouch(dst[idx], peer[idx])
        ri = rest[rest >= no] - no
        if ri.size:
            assert r is not None
            for idx in subrounds(r["dst"][ri], r["t"][ri]):
                idx = ri[idx]
                cyclon.take_reply(r["dst"][idx], r["src"][idx], r["entries"][idx], r["ages"][idx], r["n_entries"][idx],
                                  r["sent"][idx], r["n_sent"][idx])

    # -- phase 2: messages reach their receivers -------------------------------------------

    def deliveries(self, models: Events | None, requests: Events | None, k: int) -> None:
        """Models and shuffle requests reach their receivers. The two touch disjoint state (the
        model; the view and books), so each kind is applied in its own per-node order."""
        m = self.reachable(_nothing(models), k)
        q = self.reachable(_nothing(requests), k)
        if self.tokens is not None:  # forwards that arrive within this slice are merged in it
            self.soon, self.busy[:] = [], False
        if m is not None:
            self.woken(m["dst"], m["t"])
        self.merge(m, k)
        self.acknowledge(m, k)
        while self.soon:
            now = self.reachable(Events.concat(self.soon), k)
            self.soon = []
            if now is not None:
                self.woken(now["dst"], now["t"])
                self.merge_now(now, k)
                self.acknowledge(now, k)
        self.soon = None
        if q is not None:
            assert isinstance(self.peers, BatchedCyclon)
            self.woken(q["dst"], q["t"])
            rep = self.shuffle_requests(self.peers, q)
            self.traffic["sampling_messages"] += len(rep)
            self.traffic["sampling_bytes"] += int(self.shuffle_bytes[rep["n_entries"]].sum())
            # the reply goes back from the responder (src) to the initiator (dst)
            arrives, ok = self.answer(k, rep["dst"], rep["src"], rep["sent_at"], rep["t"])
            if ok.any():
                rep = rep.take(np.flatnonzero(ok))
                rep["t"] = arrives[ok]
                self.calendar.add(REPLY, rep, k + 1)

    def acknowledge(self, m: Events | None, k: int) -> None:
        """Delivered models are acknowledged, one round trip after they left."""
        if m is None:
            return
        arrives, ok = self.answer(k, m["src"], m["dst"], m["sent_at"], m["t"])
        if self.acks and ok.any():
            self.outcome(k, m["src"][ok], m["dst"][ok], DELIVERED, arrives[ok], m["sent_at"][ok])

    def merge_now(self, arrived: Events, k: int) -> None:
        """Token accounts' forwards that arrived within the slice they were sent in (the exact
        engine passes a fresh model on several hops in one slice, and so must we, or forwarding
        loses about half its speed): a node that has not merged in this slice merges its earliest
        one now, and forwards it in turn; the others wait in the inbox, as a second model does."""
        arrived["waited"] = np.zeros(len(arrived), dtype=np.int64)
        first = subrounds(arrived["dst"], arrived["t"])[0]
        go = first[~self.busy[arrived["dst"][first]]]
        self.deliver(arrived, go, k)
        rest = np.setdiff1d(np.arange(len(arrived)), go)
        if rest.size:
            self.inbox = Events.concat([e for e in (self.inbox, arrived.take(rest)) if e is not None])

    def deliver(self, ev: Events, idx: np.ndarray, k: int) -> None:
        """The models ``ev[idx]`` (distinct receivers) merged, and the useful ones forwarded."""
        msg = Snapshot(*(ev[f][idx] if f in ev else None for f in _SNAPSHOT))
        useful = self.models.deliver(ev["dst"][idx], msg, self.rng, self.counters)
        if self.tokens is not None:
            self.busy[ev["dst"][idx]] = True
            self.react(ev["dst"][idx[useful]], ev["t"][idx[useful]], k)

    def merge(self, arrived: Events | None, k: int, flush: bool = False) -> None:
        """The models in the nodes' inboxes (oldest first), then those that arrived in this
        slice, are merged in sub-rounds: each node merges its oldest model, and every model
        that has already waited ``INBOX_SLICES`` slices; the others wait one slice more, in
        order. Few nodes hear two models in a slice, so this delays a few merges by a slice or
        two and spares the engine sub-rounds (each a vectorised step over a handful of nodes)."""
        parts = [e for e in (self.inbox, arrived) if e is not None]
        self.inbox = None
        if not parts:
            return
        if arrived is not None:
            arrived["waited"] = np.zeros(len(arrived), dtype=np.int64)
        ev = Events.concat(parts)
        later: list[np.ndarray] = []
        for r, idx in enumerate(subrounds(ev["dst"], ev["t"])):
            if r > 0 and not flush:
                wait = ev["waited"][idx] < INBOX_SLICES
                if wait.any():
                    later.append(idx[wait])
                    idx = idx[~wait]
                    if idx.size == 0:
                        continue
            self.deliver(ev, idx, k)
        if later:
            self.inbox = ev.take(np.concatenate(later))
            self.inbox["waited"] += 1

    def shuffle_requests(self, cyclon: BatchedCyclon, q: Events) -> Events:
        """Each receiver answers its requests in time order; the replies, as events (their
        time is still the request's). Sub-rounds are vectorised while they hold at least
        ``cyclon.min_batch`` nodes; the tail (a seed hears hundreds of requests a slice in
        a large network) goes node by node through Cyclon.on_request's steps (``on_requests_one_by_one``)."""
        parts: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
        rounds = subrounds(q["dst"], q["t"])
        r = 0
        while r < len(rounds) and len(rounds[r]) >= cyclon.min_batch:
            idx = rounds[r]
            parts.append((idx, cyclon.on_request(q["dst"][idx], q["src"][idx], q["entries"][idx], q["ages"][idx],
                                                 q["n_entries"][idx], self.rng)))
            r += 1
        if r < len(rounds):
            tail = np.concatenate(rounds[r:])
            tail = tail[np.lexsort((q["t"][tail], q["dst"][tail]))]
            cuts = np.flatnonzero(np.diff(q["dst"][tail])) + 1
            for idx in np.split(tail, cuts):
                parts.append((idx, cyclon.on_requests_one_by_one(
                    int(q["dst"][idx[0]]), q["src"][idx], q["entries"][idx], q["ages"][idx], q["n_entries"][idx],
                    float(q["t"][idx[0]]), self.rng)))
        idx = np.concatenate([p[0] for p in parts])
        reply = np.concatenate([p[1][0] for p in parts])
        ages = np.concatenate([p[1][1] for p in parts])
        count = np.concatenate([p[1][2] for p in parts])
        return Events(t=q["t"][idx], src=q["dst"][idx], dst=q["src"][idx], sent_at=q["sent_at"][idx], entries=reply,
                      ages=ages, n_entries=count, sent=q["sent"][idx], n_sent=q["n_sent"][idx])

    def reachable(self, ev: Events | None, k: int) -> Events | None:
        """The messages that reach a live receiver: across an active cut a message is a
        timeout at its sender; at a crashed or offline node, a refused connection."""
        if ev is None:
            return None
        src, dst, t = ev["src"], ev["dst"], ev["t"]
        cut = self.crosses_cut(src, dst, t)
        if cut.any():
            self.outcome(k, src[cut], dst[cut], TIMEOUT, ev["sent_at"][cut] + self.cfg.timeout)
        down = ~cut & ~self.up(dst, t)
        if down.any():
            self.outcome(k, src[down], dst[down], UNREACHABLE, t[down] + self.delays(int(down.sum())))
        keep = np.flatnonzero(~cut & ~down)
        if keep.size == len(ev):
            return ev
        return ev.take(keep) if keep.size else None

    # -- phase 3: timers ---------------------------------------------------------------------------

    def timers(self, end: float, k: int) -> None:
        """Pushes, then shuffles, then reseeds, each at its own time (``on_tick``'s order)."""
        cyclon = self.peers if isinstance(self.peers, BatchedCyclon) else None
        retry = self.retry
        gossip_at = np.maximum(self.next_gossip, retry)
        due = self.alive & (gossip_at < end)
        if cyclon is not None:
            shuffle_at = np.maximum(cyclon.next_shuffle, retry)
            reseed_at = np.maximum(cyclon.next_reseed, retry)
            due_shuffle = self.alive & (shuffle_at < end)
            due_reseed = self.alive & (reseed_at < end)
            wake = np.minimum(gossip_at, np.minimum(shuffle_at, reseed_at))
            anything = due | due_shuffle | due_reseed
        else:
            wake, anything = gossip_at, due
        online = self.online
        if self.trace is not None:  # a timer fires if its node is online when it falls due (in this slice)
            rows = np.flatnonzero(anything)
            at = np.maximum(wake[rows], end - 1.0 / self.per_cycle)
            online = online.copy()
            online[rows] = self.trace.online(rows, at)
        off = anything & ~online
        if off.any():
            if self.trace is None:  # look again one cycle later
                retry[off] = wake[off] + 1.0
            else:  # the timers wait for the node's next session (overdue ones fire as it starts)
                rows = np.flatnonzero(off)
                retry[rows] = self.trace.next_start(rows, np.maximum(wake[rows], end - 1.0 / self.per_cycle))
        self.push(np.flatnonzero(due & online), gossip_at, k)
        if cyclon is not None:
            rows = np.flatnonzero(due_shuffle & online)
            req = cyclon.tick_shuffle(rows, shuffle_at[rows], self.rng)
            self.shuffle(req, k)
            partner = np.full(self.cfg.nodes, -1, dtype=np.int64)
            partner[req.src] = req.target
            rows = np.flatnonzero(due_reseed & online)
            self.shuffle(cyclon.tick_reseed(rows, reseed_at[rows], partner[rows], self.rng), k)

    def push(self, rows: np.ndarray, at: np.ndarray, k: int) -> None:
        """``on_tick``'s push for ``rows``, whose timers fell due at ``at[rows]``: the next one
        is set, and each pushes unless its token account keeps the opportunity (a token)."""
        if rows.size == 0:
            return
        now = at[rows]
        j = self.cfg.jitter
        self.next_gossip[rows] = now + (1.0 + self.rng.uniform(-j, j, len(rows)))
        if self.tokens is not None:
            go = self.tokens.proactive(rows, self.rng)
            rows, now = rows[go], now[go]
        self.send_models(rows, now, k)

    def react(self, rows: np.ndarray, now: np.ndarray, k: int) -> None:
        """``GossipNode.react``: nodes that just merged a useful model forward it at once, as
        many times as their token accounts say (plain push never does)."""
        if self.tokens is None or rows.size == 0:
            return
        sends = self.tokens.reactive(rows, self.rng)
        if sends.any():
            self.send_models(np.repeat(rows, sends), np.repeat(now, sends), k)

    def send_models(self, rows: np.ndarray, now: np.ndarray, k: int) -> None:
        """``GossipNode.push`` for ``rows`` at ``now``: the model as it is, to a random peer."""
        if rows.size == 0:
            return
        peer = self.peers.select_peer(rows, self.rng)
        has = peer >= 0
        rows, now, peer = rows[has], now[has], peer[has]
        np.add.at(self.counters["sent"], rows, 1)  # a node forwarding twice appears twice
        self.traffic["messages"] += len(rows)
        snap = self.models.snapshot(rows, self.rng)
        if snap.parts is None:
            self.traffic["bytes"] += len(rows) * self.push_bytes
        else:  # each push by the partitions it carries (and the statistics, with partition 0)
            index, times = np.unique(snap.parts, axis=0, return_counts=True)
            self.traffic["bytes"] += sum(int(t) * self.sizes.model_bytes(self.cfg.codec, tuple(int(k) for k in i))
                                         for i, t in zip(index, times))
        self.send(k, MODEL, rows, peer, now, **{f: getattr(snap, f) for f in _SNAPSHOT
                                                   if getattr(snap, f) is not None})

    def shuffle(self, req: Requests, k: int) -> None:
        if len(req.src) == 0:
            return
        self.traffic["sampling_messages"] += len(req.src)
        self.traffic["sampling_bytes"] += int(self.shuffle_bytes[req.n_entries].sum())
        self.send(k, REQUEST, req.src, req.target, req.now, entries=req.entries, ages=req.ages,
                  n_entries=req.n_entries, sent=req.sent, n_sent=req.n_sent)


_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTYF = np.zeros(0)


def _nothing(ev: Events | None) -> Events | None:
    return ev if ev is not None and len(ev) else None

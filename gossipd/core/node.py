"""GossipNode: the sans-IO gossip-learning core.

It is handed the time and its inputs and returns what to send; it never reads
a clock, never does I/O and never touches global randomness. The simulator and
the daemon both drive this class, so a result measured in simulation is a claim
about the daemon.

Drivers call ``on_tick(now)`` once ``now >= next_wakeup()``, deliver received
messages to ``on_model`` / ``on_shuffle_request`` / ``on_shuffle_reply``, and
report undeliverable messages with ``on_send_failed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gossipd.core.merge import parse_merge
from gossipd.core.messages import Address, ModelMessage, Send, ShuffleReply, ShuffleRequest
from gossipd.core.scaling import FeatureStats
from gossipd.core.state import ModelState
from peer_sampling.knobs import check_knobs, fraction_below_one, knob, positive
from peer_sampling.sampler import PeerSampler

if TYPE_CHECKING:  # the node only calls its learner: importing torch here would slow every config reader
    from gossipd.core.learner import Learner, LocalData


@dataclass(frozen=True)
class GossipConfig:
    """The gossip-learning protocol's knobs (times in the driver's unit)."""

    interval: float = knob(5.0, """Δ, the mean time between two pushes of this node. Shorter spreads
        models faster at a proportional cost in bandwidth and CPU (every push triggers a training pass
        at the receiver).""", positive)
    jitter: float = knob(0.1, """Each period is Δ·(1 ± jitter), uniformly, so nodes drift apart and never
        push in lock-step; 0 makes runs easier to reason about, not better.""", fraction_below_one)
    merge: str = knob("age", """How a received model is combined with ours: age | average | overwrite |
        limited:L. "age" weights each model by the examples it has seen (robust default); "average" is the plain mean (a fresh model drags a
        trained one back); "overwrite" takes the received model (random-walk baseline); "limited:L" is
        "age", but keeps the older model unchanged when the ages differ by more than L.""", parse_merge)

    def __post_init__(self) -> None:
        check_knobs(self)


@dataclass
class Counters:
    """What a node has done; exported at /v1/status and /metrics."""

    sent: int = 0
    received: int = 0
    merged: int = 0
    rejected: int = 0
    send_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class RejectedMessage(ValueError):
    """A model that passed the wire checks but cannot be merged here."""


@dataclass
class GossipNode:
    address: Address
    learner: Learner
    data: LocalData
    sampler: PeerSampler
    config: GossipConfig
    rng: np.random.Generator
    state: ModelState | None = None
    now: float = 0.0
    counters: Counters = field(default_factory=Counters)
    # The scaling statistics the model's inputs are standardised by. With
    # network-learned scaling they travel with every push and merge like the
    # model; otherwise they are the learner's fixed ones (or None).
    stats: FeatureStats | None = None

    def __post_init__(self) -> None:
        self._merge = parse_merge(self.config.merge)
        if self.state is None:
            self.state = self.learner.initial_state()
        self.learner.check(self.state)
        if self.stats is None:
            self.stats = self.learner.initial_stats(self.data)
        self.learner.stats_for(self.stats)  # ValueError if they do not fit the learner
        # Training draws from its own stream: the daemon trains in a worker
        # thread while the event loop draws timers and peers from ``rng``.
        self._learn_rng = np.random.default_rng(self.rng.integers(2**63))
        # First push somewhere in the first period, so nodes started together
        # do not push together.
        self.next_gossip = self.now + self.rng.uniform(0.0, self.config.interval)

    # -- timers --------------------------------------------------------------

    def next_wakeup(self) -> float:
        return min(self.next_gossip, self.sampler.next_wakeup())

    def on_tick(self, now: float) -> list[Send]:
        """Run whatever timers are due: push the model, start a shuffle."""
        sends: list[Send] = []
        if now >= self.next_gossip:
            j = self.config.jitter
            self.next_gossip = now + self.config.interval * (1.0 + self.rng.uniform(-j, j))
            push = self.push()
            if push is not None:
                sends.append(push)
        if now >= self.sampler.next_wakeup():
            sends.extend(Send(peer, req) for peer, req in self.sampler.on_tick(now))
        return sends

    def push(self) -> Send | None:
        """The current model, addressed to a random peer (None if none is known)."""
        peer = self.sampler.select_peer()
        if peer is None:
            return None
        state = self.state
        assert state is not None
        self.counters.sent += 1
        stats = self.stats if self.learner.scaling.learned else None
        return Send(peer, ModelMessage(self.address, self.learner.fingerprint, state.age, state.params, stats))

    # -- inputs --------------------------------------------------------------

    def on_model(self, now: float, msg: ModelMessage) -> ModelState:
        """Merge a received model into ours, then train on the local data.

        CPU-bound: the daemon calls this from one worker thread at a time. The
        new state replaces ``self.state`` in one assignment at the end, so a
        reader on another thread sees either the old or the new model.
        """
        if msg.arch != self.learner.fingerprint or msg.params.shape != (self.learner.n_params,):
            self.counters.rejected += 1
            raise RejectedMessage(
                f"model from {msg.sender} has architecture {msg.arch} with {msg.params.size} "
                f"parameters; this node runs {self.learner.fingerprint} with {self.learner.n_params}"
            )
        stats = self.stats
        if self.learner.scaling.learned:
            if msg.stats is None or stats is None or msg.stats.size != stats.size:
                self.counters.rejected += 1
                raise RejectedMessage(f"model from {msg.sender} lacks scaling statistics of "
                                      f"{self.learner.schema.n_stat_columns} columns")
            stats = stats.merge(msg.stats)
        self.counters.received += 1
        local = self.state
        assert local is not None
        merged = self._merge(local, ModelState(msg.params, msg.age))
        state = self.learner.update(merged, self.data, self._learn_rng, stats)
        # Back to back, so a reader on another thread sees a model with its own scaling
        # (up to one bytecode apart).
        self.stats = stats
        self.state = state
        self.counters.merged += 1
        return self.state

    def use_data(self, data: LocalData, added: LocalData | None = None) -> None:
        """Train on ``data`` from now on; ``added``: the examples that are new in it,
        which join network-learned scaling statistics (examples that left do not)."""
        if self.learner.scaling.learned and added is not None and len(added) and self.stats is not None:
            self.stats = self.stats.pooled(self.learner.initial_stats(added))  # type: ignore[arg-type]
        self.data = data

    def on_shuffle_request(self, now: float, request: ShuffleRequest) -> ShuffleReply | None:
        return self.sampler.on_request(now, request)

    def on_shuffle_reply(self, now: float, reply: ShuffleReply) -> None:
        self.sampler.on_reply(now, reply)

    def join(self, now: float, peer: Address) -> list[Send]:
        """Add a seed peer (admin join); a dynamic sampler also shuffles with it now."""
        return [Send(p, req) for p, req in self.sampler.introduce(now, peer)]

    def on_send_failed(self, now: float, peer: Address) -> None:
        """A push or shuffle to ``peer`` did not arrive: tell the sampler."""
        self.counters.send_failures += 1
        self.sampler.on_peer_failed(now, peer)

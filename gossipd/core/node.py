"""GossipNode: the sans-IO gossip-learning core.

It is handed the time and its inputs and returns what to send; it never reads
a clock, never does I/O and never touches global randomness. The simulator and
the daemon both drive this class, so a result measured in simulation is a claim
about the daemon.

Drivers call ``on_tick(now)`` once ``now >= next_wakeup()``, deliver received
messages to ``on_model`` / ``on_shuffle_request``, and answer every request the
node sent with exactly one call: ``on_shuffle_reply`` for a shuffle that got
its reply, else ``on_outcome`` (see :class:`~peer_sampling.outcome.Outcome`).
After ``on_model`` they collect ``take_discards()`` to log what was thrown away,
and send what ``react(now)`` returns (a token account forwards a useful model at
once; plain push returns nothing), from the thread that calls ``on_tick``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gossipd.core import codec as codecs
from gossipd.core.flow import Flow, parse_flow
from gossipd.core.merge import CLIP_SCALE, CLIP_WINDOW, MergeRule, merge_parts, parse_merge
from gossipd.core.messages import Address, ModelMessage, Outcome, Parts, Send, ShuffleReply, ShuffleRequest
from gossipd.core.partition import Layout, carried_count, check_partitions, check_subsample
from gossipd.core.scaling import FeatureStats, RobustStatsMerge
from gossipd.core.state import ModelState
from peer_sampling.knobs import check_knobs, fraction_below_one, integer, knob, non_negative, positive
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
    merge: str = knob("robust", """How a received model is combined with ours: robust | age | average |
        overwrite | limited:L. "robust" (default) is "age" with bounds no single message can exceed: its
        claimed age is capped and a model far from what we usually hear moves us little
        (docs/architecture.md, Robustness). "age" weights each model by the examples it has seen and
        trusts the sender's age, so one peer claiming a huge age takes over; "average" is the plain mean
        (a fresh model drags a trained one back); "overwrite" takes the received model (random-walk
        baseline); "limited:L" is "age", but keeps the older model unchanged when the ages differ by more
        than L.""", parse_merge)
    max_age_lead_passes: float = knob(20.0, """(robust) A received model counts as at most this many passes
        over our local data older than ours (20 passes of a node with 13 examples: 270). Larger lets a
        node that fell behind catch up in fewer merges; smaller limits how fast a liar can age the
        network, and so shrink everyone's learning rate. Honest peers differ by a few passes per gossip
        hop.""", non_negative)
    clip_scale: float = knob(CLIP_SCALE, """(robust) Models farther than clip_scale times the first
        quartile of the last clip_window distances to received models move this node less the farther
        they are. Smaller resists outliers more but slows honest mixing.""", positive)
    clip_window: int = knob(CLIP_WINDOW, """(robust) How many recent distances set the radius. Longer
        is harder for a burst of outliers to shift, but lags behind as the network converges and
        distances shrink.""", integer(1))
    max_param_abs: float = knob(1e6, """The largest parameter magnitude a node accepts as the result of a
        merge or a training step; anything larger, or not finite, is discarded (counted in
        'discarded') and the previous model kept. Far above any weight of the built-in models, far below
        where float32 arithmetic overflows (3.4e38).""", positive)

    codec: str = knob("fp32", """How pushed parameters (and learned scaling statistics) are written on the
        wire: fp32 | fp16 | int8. fp32 is exact (4 bytes a parameter); fp16 halves that (relative error
        2^-11; magnitudes beyond 65504 saturate); int8 is a quarter plus one scale byte per 32 parameters
        (error under 1/127 of the block's largest magnitude; its statistics ride as fp16;
        docs/protocol.md). Anything but fp32 sends protocol version 2, which nodes older than it refuse:
        switch only once every node of the cluster speaks it. Receivers accept every codec whatever
        their own.""", codecs.check_codec)
    partitions: int = knob(1, """P: the model is cut into this many partitions (coordinate i belongs to
        partition i mod P), each with its own age, so that a push may carry only some of them (see
        subsample). Every node of a cluster must use the same P (a message cut otherwise is refused,
        409 wrong_partitions). P > 1 sends protocol version 2.""", check_partitions)
    subsample: float = knob(1.0, """The fraction of the partitions one push carries, chosen at random
        (at least one): 0.1 with partitions = 10 sends one partition, a tenth of the bytes, per push.
        The receiver merges each carried partition by its own age and leaves the rest; training updates
        all of them. The scaling statistics ride with partition 0.""", check_subsample)
    flow: str = knob("push", """When to push: push | tokens:A,C. "push" sends one model every interval.
        "tokens:A,C" is Danner and Jelasity's randomized token account (reactivity A, capacity C): a
        period without a push earns a token, and a useful received model is forwarded at once to about
        tokens/A peers, so models travel faster at the same average number of messages
        (docs/architecture.md).""", parse_flow)

    def __post_init__(self) -> None:
        check_knobs(self)

    @property
    def carried(self) -> int:
        """Partitions one push carries."""
        return carried_count(self.partitions, self.subsample)

    def merge_rule(self, local_examples: int = 1) -> MergeRule:
        """A fresh merge function for one node holding ``local_examples`` training
        examples (the robust rule keeps per-node history; its age lead is
        ``max_age_lead_passes`` passes over them)."""
        return parse_merge(self.merge, max_age_lead=self.max_age_lead_passes * max(local_examples, 1),
                           clip_scale=self.clip_scale, clip_window=self.clip_window)


@dataclass
class Counters:
    """What a node has done; exported at /v1/status and /metrics."""

    sent: int = 0
    received: int = 0
    merged: int = 0
    rejected: int = 0
    send_failures: int = 0
    discarded: int = 0
    timeouts: int = 0
    busy: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class RejectedMessage(ValueError):
    """A model that passed the wire checks but cannot be merged here."""


@dataclass(frozen=True, slots=True)
class Discard:
    """A merge or training result the node threw away, keeping its previous model.

    stage: ``merge`` or ``update``; reason: ``non_finite`` | ``too_large`` |
    ``diverged`` (the learner refused its own step); sender and claimed age
    of the model that led to it.
    """

    stage: str
    reason: str
    sender: Address
    claimed_age: float

    def __str__(self) -> str:
        return (f"{self.stage} of the model from {self.sender} (claimed age {self.claimed_age:g}) "
                f"discarded: {self.reason.replace('_', ' ')}; the previous model is kept")


class NodeModel(NamedTuple):
    """A node's model and the scaling statistics its inputs are standardised by:
    one value, replaced in one assignment, so a reader on another thread (a push
    from the daemon's event loop while the trainer thread merges) never pairs a
    model with another model's statistics."""

    state: ModelState
    stats: FeatureStats | None


_MAX_DISCARD_NOTES = 32  # held for the driver between two take_discards(); the counter counts all


@dataclass
class GossipNode:
    address: Address
    learner: Learner
    data: LocalData
    sampler: PeerSampler
    config: GossipConfig
    rng: np.random.Generator
    # The initial model (default: the learner's) and scaling statistics (default: from the
    # local data). With network-learned scaling the statistics travel with every push and
    # merge like the model; otherwise they are the learner's fixed ones (or None). Both live
    # in ``model`` (one NodeModel); ``state`` and ``stats`` read and replace it.
    state: InitVar[ModelState | None] = None
    now: float = 0.0
    counters: Counters = field(default_factory=Counters)
    stats: InitVar[FeatureStats | None] = None

    def __post_init__(self, state: ModelState | None, stats: FeatureStats | None) -> None:
        self._merge = self.config.merge_rule(len(self.data))
        self.flow: Flow = parse_flow(self.config.flow)
        partitions = self.config.partitions
        self.layout: Layout | None = Layout(self.learner.n_params, partitions) if partitions > 1 else None
        if state is None:
            state = self.learner.initial_state()
        self.learner.check(state)
        state = state.with_partitions(partitions)
        if stats is None:
            stats = self.learner.initial_stats(self.data)
        self.learner.stats_for(stats)  # ValueError if they do not fit the learner
        if self._unsafe(state.params) is not None:
            raise ValueError("initial model has non-finite or out-of-bound parameters")
        self.model = NodeModel(state, stats)
        # Received statistics are judged against the node's own data's (issue 10).
        own = self.learner.initial_stats(self.data) if len(self.data) else None
        self._merge_stats = RobustStatsMerge(own, anchored=self.learner.schema.n_features)
        self._discards: list[Discard] = []
        # One entry per useful model merged (trainer thread); react() takes them (event loop).
        # A deque's append and popleft are atomic, so the two threads need no lock.
        self._useful: deque[None] = deque()
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
            if self.flow.proactive(self.rng):
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
        state, stats = self.model  # one read: the trainer thread may replace it meanwhile
        self.counters.sent += 1
        codec = self.config.codec
        stats = codecs.roundtrip_stats(codec, stats) if self.learner.scaling.learned and stats is not None else None
        if self.layout is None:
            params = codecs.roundtrip(codec, state.params)
            return Send(peer, ModelMessage(self.address, self.learner.fingerprint, state.age, params, stats, codec))
        assert state.ages is not None
        index = self.layout.choose(self.rng, self.config.carried)
        params = codecs.roundtrip(codec, self.layout.gather(state.params, index))
        parts = Parts(self.layout.count, index, tuple(float(state.ages[k]) for k in index))
        return Send(peer, ModelMessage(self.address, self.learner.fingerprint, state.age, params,
                                       stats if index[0] == 0 else None, codec, parts))

    def react(self, now: float) -> list[Send]:
        """The pushes the flow policy sends in reaction to the useful models merged since the
        last call (a token account forwards them at once; plain push never does)."""
        sends: list[Send] = []
        while self._useful:
            self._useful.popleft()
            for _ in range(self.flow.reactive(self.rng)):
                push = self.push()
                if push is not None:
                    sends.append(push)
        return sends

    # -- inputs --------------------------------------------------------------

    def on_model(self, now: float, msg: ModelMessage) -> ModelState:
        """Merge a received model into ours, then train on the local data.

        CPU-bound: the daemon calls this from one worker thread at a time. The
        new model and its statistics replace ``self.model`` in one assignment at
        the end, so a reader on another thread sees either the old pair or the new.

        Numeric safety: a merged or trained model that is not finite, or has a
        parameter above ``max_param_abs``, is discarded: the node keeps the
        model it had, counts ``discarded`` and notes it for ``take_discards``.
        Returns the node's model afterwards, new or kept.
        """
        problem = self._mismatch(msg)
        if problem is not None:
            self.counters.rejected += 1
            raise RejectedMessage(f"model from {msg.sender} {problem}")
        local, stats = self.model
        if self.learner.scaling.learned:
            if msg.stats is not None and stats is not None and msg.stats.size == stats.size:
                stats = self._merge_stats(stats, msg.sender, msg.stats)
            elif msg.parts is None or msg.parts.index[0] == 0:  # the statistics ride with partition 0
                self.counters.rejected += 1
                raise RejectedMessage(f"model from {msg.sender} lacks scaling statistics of "
                                      f"{self.learner.schema.n_stat_columns} columns")
        self.counters.received += 1
        if self.layout is None:
            merged = self._merge(local, ModelState(msg.params, msg.age))
        else:  # a whole model (parts None) is every partition at its one age
            parts = msg.parts or Parts(self.layout.count, tuple(range(self.layout.count)),
                                       (msg.age,) * self.layout.count)
            merged = merge_parts(self._merge, local, msg.params, parts, self.layout)
        reason = self._unsafe(merged.params)
        if reason is not None:
            return self._discard("merge", reason, msg)
        updated = self._train(merged, self.data, stats)
        # The learner hands its input back when its own step went non-finite.
        reason = "diverged" if updated is merged and len(self.data) > 0 else self._unsafe(updated.params)
        if reason is not None:
            return self._discard("update", reason, msg)  # the scaling statistics stay as they were too
        self.model = NodeModel(updated, stats)
        self.counters.merged += 1
        self._useful.append(None)
        return updated

    def _mismatch(self, msg: ModelMessage) -> str | None:
        """Why ``msg`` cannot be merged into this node's model, or None (the wire checks the
        same for the daemon; the simulator hands messages over unchecked)."""
        n = self.learner.n_params
        if msg.arch != self.learner.fingerprint:
            return f"has architecture {msg.arch}; this node runs {self.learner.fingerprint}"
        if msg.parts is None:
            expected = n
        elif self.layout is None or msg.parts.count != self.layout.count:
            return f"is cut into {msg.parts.count} partitions; this node's models into {self.config.partitions}"
        else:
            expected = self.layout.size_of(msg.parts.index)
        if msg.params.shape != (expected,):
            return f"carries {msg.params.size} parameters where this node expects {expected}"
        return None

    def _train(self, state: ModelState, data: LocalData, stats: FeatureStats | None) -> ModelState:
        """One local pass (learner.update); a cut model's partitions all age by the examples seen."""
        updated = self.learner.update(state, data, self._learn_rng, stats)
        if state.ages is None or updated is state:
            return updated
        return ModelState.owned(updated.params, 0.0, state.ages + (updated.age - state.age))

    def _unsafe(self, params: np.ndarray) -> str | None:
        """Why ``params`` must not become this node's model, or None if they may."""
        with np.errstate(invalid="ignore"):
            peak = float(np.max(np.abs(params))) if params.size else 0.0
        if not math.isfinite(peak):
            return "non_finite"
        if peak > self.config.max_param_abs:
            return "too_large"
        return None

    def _discard(self, stage: str, reason: str, msg: ModelMessage) -> ModelState:
        self.counters.discarded += 1
        if len(self._discards) < _MAX_DISCARD_NOTES:
            self._discards.append(Discard(stage, reason, msg.sender, msg.age))
        return self.model.state

    def take_discards(self) -> list[Discard]:
        """What ``on_model`` threw away since the last call, each reported once
        (at most 32 held between calls; ``counters.discarded`` counts them all).
        The core does not log: the daemon logs these, the simulator counts."""
        out, self._discards = self._discards, []
        return out

    def use_data(self, data: LocalData, added: LocalData | None = None, *, train: bool = False) -> None:
        """Train on ``data`` from now on; ``added``: the examples that are new in it,
        which join network-learned scaling statistics (examples that left do not).
        ``train``: also take one local pass over ``added`` now (its age rises by their
        number), rather than waiting for the next received model.

        CPU-bound with ``train``: the daemon calls it in its trainer thread, like on_model."""
        state, stats = self.model
        if self.learner.scaling.learned and added is not None and len(added) and stats is not None:
            stats = stats.pooled(self.learner.initial_stats(added))  # type: ignore[arg-type]
        if train and added is not None and len(added):
            state = self._train(state, added, stats)
        self.model = NodeModel(state, stats)
        self.data = data

    def on_shuffle_request(self, now: float, request: ShuffleRequest) -> ShuffleReply | None:
        return self.sampler.on_request(now, request)

    def on_shuffle_reply(self, now: float, reply: ShuffleReply) -> None:
        self.sampler.on_reply(now, reply)

    def join(self, now: float, peer: Address) -> list[Send]:
        """Add a seed peer (admin join); a dynamic sampler also shuffles with it now."""
        return [Send(p, req) for p, req in self.sampler.introduce(now, peer)]

    def on_outcome(self, now: float, peer: Address, outcome: Outcome) -> None:
        """What became of a push, or of a shuffle that got no reply: count it and
        let the sampler decide about the peer (busy never costs a peer its place)."""
        c = self.counters
        if outcome is Outcome.BUSY:
            c.busy += 1
        elif outcome.failed:
            c.send_failures += 1
            if outcome.strike:
                c.timeouts += 1
        self.sampler.on_outcome(now, peer, outcome)


# ``state`` and ``stats`` are constructor arguments (InitVar) and, after construction, views
# of ``model``; set here because a property in the class body would become the dataclass
# default. Assigning one replaces ``model`` whole, keeping the other half.
def _get_state(node: GossipNode) -> ModelState:
    return node.model.state


def _set_state(node: GossipNode, state: ModelState) -> None:
    # A model set from outside (restored from disk, by a test) gets this node's partition ages.
    node.model = node.model._replace(state=state.with_partitions(node.config.partitions))


def _get_stats(node: GossipNode) -> FeatureStats | None:
    return node.model.stats


def _set_stats(node: GossipNode, stats: FeatureStats | None) -> None:
    node.model = node.model._replace(stats=stats)


GossipNode.state = property(_get_state, _set_state, doc="The node's model (``model.state``).")  # type: ignore[assignment,method-assign]
GossipNode.stats = property(_get_stats, _set_stats, doc="Its scaling statistics (``model.stats``).")  # type: ignore[assignment,method-assign]

"""Cyclon peer sampling as a sans-IO state machine.

Voulgaris, Gavidia and van Steen, "CYCLON: Inexpensive Membership Management
for Unstructured P2P Overlays" (J. Network and Systems Management, 2005).

Each node keeps a small view of ``view_size`` descriptors. Once per ``interval``
it ages every entry, removes its *oldest* neighbour Q and sends Q a fresh
self-descriptor plus ``shuffle_length - 1`` random entries; Q answers with
``shuffle_length`` random entries of its own and both sides swap the sent
entries for the received ones. Contacting the oldest entry is what cleans up
after crashes: a dead Q never answers, and it has already been removed.

The object never reads a clock: the driver passes ``now`` (any monotonic unit,
as long as ``CyclonConfig.interval`` is in the same unit), calls ``on_tick`` at
or after ``next_wakeup()``, delivers the returned requests, and feeds back
replies and, for requests that got none, an :class:`Outcome`.

Beyond the paper, three defences (see ``docs/architecture.md``):

- *eclipse*: one message puts at most ``max_from_one`` entries into the view
  (ℓ, and never all of it), however many it carries;
- *unvouched entries age faster*: an address that never answered a request of
  ours ages by ``unvouched_age_step`` per shuffle instead of 1, so it is
  contacted (and dropped, if it is not there) before the ones we know exist;
- *reseeding*: every ``reseed_interval`` (default: 5 shuffle periods) the node
  also shuffles with a seed or a remembered address that is not in its view,
  so a network that was split in two merges again once the cut is gone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from peer_sampling.knobs import (
    KnobError,
    check_knobs,
    fraction_below_one,
    integer,
    knob,
    optional,
    positive,
    positive_or_inf,
)
from peer_sampling.messages import Address, PeerDescriptor, ShuffleReply, ShuffleRequest
from peer_sampling.outcome import Outcome
from peer_sampling.view import View

__all__ = ["Cyclon", "CyclonConfig"]


@dataclass(frozen=True, slots=True)
class CyclonConfig:
    """Cyclon parameters. Times are in the driver's unit (seconds in the daemon,
    cycles in the simulator, which passes ``interval=1.0``)."""

    view_size: int = knob(20, """c: neighbours kept. Larger views heal faster and give a better-connected,
        more random overlay, at the price of more state and older descriptors (a dead peer lingers
        ~c shuffles before its pointers are all gone).""", integer(1))

    shuffle_length: int = knob(8, """ℓ (1..view_size): descriptors exchanged per shuffle. Larger mixes
        the overlay in fewer rounds but costs bigger messages.""", integer(1))

    interval: float = knob(10.0, """Time between two shuffles of this node's view with a peer. Shorter
        tracks churn and joins faster but costs one request and one reply per node per period.""",
        positive)

    jitter: float = knob(0.1, """Fraction of interval: each period is drawn uniformly from
        interval * [1 - jitter, 1 + jitter], so nodes started together drift out of lock-step.
        0 gives exact periods.""", fraction_below_one)

    reseed_interval: float | None = knob(None, """How often to shuffle, in addition to the normal
        shuffle, with a seed or a remembered address that is not in the view (unset: 5 intervals;
        inf = never). This is what heals a partition: once a network has been cut in two for longer
        than it takes Cyclon to forget the other side, no view points across any more and nothing
        else would ever reconnect the halves. Costs one extra shuffle per node per reseed interval,
        half of them on the seeds. Independently of this, a node whose view is empty always contacts
        a seed or remembered address at its next shuffle.""", optional(positive_or_inf))

    fallback_size: int = knob(100, """Addresses remembered beyond the view (seen in past shuffles) and
        tried, with the seeds, when the view runs empty. This is what lets a node whose whole
        neighbourhood crashed (e.g. 90% of the network at once, seeds included) find a survivor
        again. Costs memory only; 0 disables it.""", integer(0))

    pending_timeout: float | None = knob(None, """How long to remember an unanswered shuffle (unset:
        one interval). A reply arriving later is still used, but only to fill empty slots, since the
        entries sent with that request have been forgotten.""", optional(positive))

    max_timeouts: int = knob(2, """Timeouts (or lost replies) in a row after which a peer counts as
        unreachable and is dropped. 1 drops a peer for one lost packet or one slow answer; larger keeps
        dead peers around longer (each costs a push that goes nowhere). Busy answers never count.""",
        integer(1))

    unvouched_age_step: int = knob(2, """How much older per shuffle an entry gets when its address never
        answered a request of ours (entries that did age by 1). Larger evicts addresses an attacker or
        a stale view made up faster; 1 is plain Cyclon.""", integer(1))

    def __post_init__(self) -> None:
        check_knobs(self)
        if self.shuffle_length > self.view_size:
            raise KnobError("CyclonConfig", "shuffle_length",
                            f"must be <= view_size ({self.view_size}), got {self.shuffle_length}")

    @property
    def effective_pending_timeout(self) -> float:
        return self.interval if self.pending_timeout is None else float(self.pending_timeout)

    @property
    def effective_reseed_interval(self) -> float:
        return 5.0 * self.interval if self.reseed_interval is None else float(self.reseed_interval)

    @property
    def max_from_one(self) -> int:
        """Entries one shuffle message may put into the view: ℓ (what an honest
        partner sends), and never the whole view, so no single message (a forged
        64-entry one included) can replace a node's every neighbour."""
        return max(1, min(self.shuffle_length, self.view_size - 1))


@dataclass(slots=True)
class _Pending:
    """A shuffle waiting for its reply: when it left and which entries went with it."""

    sent_at: float
    sent: tuple[Address, ...]


class Cyclon:
    """One node's Cyclon state machine; implements :class:`PeerSampler`."""

    def __init__(
        self,
        self_address: Address,
        seeds: Sequence[Address],
        config: CyclonConfig,
        rng: np.random.Generator,
        now: float = 0.0,
    ) -> None:
        self.self_address: Address = self_address
        self.config: CyclonConfig = config
        self.rng: np.random.Generator = rng
        self.view: View = View(self_address, self.config.view_size)
        self.seeds: list[Address] = []
        for s in seeds:
            self._remember_seed(s)
        self._pending: dict[Address, _Pending] = {}
        # Insertion-ordered: the oldest sighting is evicted first.
        self.known: dict[Address, None] = {}
        # Addresses that answered a request of ours (bounded, oldest out), and
        # timeouts in a row per address; both feed on_outcome's decisions.
        self.vouched: dict[Address, None] = {}
        self._strikes: dict[Address, int] = {}
        self._memory = max(2 * self.config.view_size, self.config.view_size + self.config.fallback_size)
        # Addresses that failed, kept (same bound) rather than forgotten, and tried
        # only when seeds and ``known`` have nothing left: a node restarted while
        # all its neighbours were down, or cut off by churn, finds them again
        # when they come back.
        self.failed: dict[Address, None] = {}
        # First shuffle somewhere in the first period, so nodes started together
        # do not all shuffle at once.
        self._next_shuffle: float = now + float(rng.random()) * self.config.interval
        ri = self.config.effective_reseed_interval
        self._next_reseed: float = now + float(rng.random()) * ri if math.isfinite(ri) else math.inf

    # -- PeerSampler ------------------------------------------------------------

    def select_peer(self) -> Address | None:
        return self.view.random_address(self.rng)

    def peers(self) -> list[Address]:
        return self.view.addresses()

    def next_wakeup(self) -> float:
        return min(self._next_shuffle, self._next_reseed)

    def on_tick(self, now: float) -> list[tuple[Address, ShuffleRequest]]:
        """Run the shuffle (and reseed) timers that are due.

        At most one shuffle per call: a driver that woke late does not get a
        burst of catch-up shuffles; the next period is counted from ``now``.
        """
        self._expire_pending(now)
        out: list[tuple[Address, ShuffleRequest]] = []
        if now >= self._next_shuffle:
            self._next_shuffle = now + self._period(self.config.interval)
            msg = self._shuffle(now)
            if msg is not None:
                out.append(msg)
        if now >= self._next_reseed:
            self._next_reseed = now + self._period(self.config.effective_reseed_interval)
            target = self._reseed_target(exclude={dest for dest, _ in out})
            if target is not None:
                out.append(self._make_request(now, target))
        return out

    def on_request(self, now: float, request: ShuffleRequest) -> ShuffleReply | None:
        """Answer with up to ℓ random entries (never the requester), then take in
        the requester's entries, overwriting the ones just sent back."""
        sender = request.sender
        self.failed.pop(sender, None)
        reply = self.view.sample(self.config.shuffle_length, self.rng, exclude=sender)
        if sender != self.self_address:
            self._integrate(request.entries, tuple(d.address for d in reply))
        return ShuffleReply(self.self_address, tuple(reply))

    def on_reply(self, now: float, reply: ShuffleReply) -> None:
        """Take in Q's entries: fill free slots first, then overwrite what was sent
        to Q. An unexpected or late reply only fills free slots."""
        pending = self._pending.pop(reply.sender, None)
        self.failed.pop(reply.sender, None)
        sent = pending.sent if pending is not None else ()
        placed = self.config.max_from_one - self._integrate(reply.entries, sent)
        self._vouch(reply.sender)
        # The partner just proved it is alive: keep it if a slot is free (and
        # it would not make its own message fill the whole view). With full
        # views (any network larger than c) this changes nothing; in a small
        # network it stops a link from flipping away on every shuffle (two
        # nodes would otherwise forget each other half of the time).
        if placed < self.config.view_size - 1:
            self.view.add(PeerDescriptor(reply.sender, 0))

    def on_outcome(self, now: float, address: Address, outcome: Outcome) -> None:
        """Act on what became of a request to ``address`` (see :class:`Outcome`):
        answered -> vouched for; refused or unreachable -> dropped from the view
        and moved from the fallback book ``known`` to ``failed`` (the last
        resort); timeouts -> the same after ``max_timeouts`` in a row. Seeds
        stay seeds whatever happens: they are the way back after a partition."""
        if outcome.alive:
            if outcome is Outcome.BUSY and address not in self.view:
                # Alive but loaded or still starting: a way back for later. Without this, a
                # node whose last address answered 'starting' (it left the failed book on
                # that answer) was left knowing nobody, for good.
                self._note((address,))
            self._vouch(address)
            return
        self._pending.pop(address, None)  # the shuffle, if that is what it was, is over
        if outcome.strike:
            strikes = self._strikes.pop(address, 0) + 1
            if strikes < self.config.max_timeouts:
                self._strikes[address] = strikes
                self._trim(self._strikes)
                return
        self._strikes.pop(address, None)
        self.view.remove(address)
        self.known.pop(address, None)
        self.vouched.pop(address, None)
        cap = self.config.fallback_size
        if cap and address not in self.failed and address not in self.seeds and address != self.self_address:
            self.failed[address] = None
            if len(self.failed) > cap:
                del self.failed[next(iter(self.failed))]

    def add_seed(self, address: Address) -> None:
        """Remember ``address`` as a seed and, if there is room, as a neighbour
        (also when it was a seed already: an admin join is a hint to use it now)."""
        if address == self.self_address:
            return
        self._remember_seed(address)
        self.view.add(PeerDescriptor(address, 0))

    def introduce(self, now: float, address: Address) -> list[tuple[Address, ShuffleRequest]]:
        """An admin join: remember ``address`` as a seed and shuffle with it now,
        so both sides know each other at once instead of after a period."""
        if address == self.self_address:
            return []
        self.add_seed(address)
        return [self._make_request(now, address)]

    # -- checkpointing ----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain lists only: ``{"view": [[address, age], ...], "seeds": [...], "known": [...],
        "failed": [...]}``. Timers and pending shuffles are not saved: they are
        relative to a clock that does not survive a restart."""
        return {"view": self.view.to_list(), "seeds": list(self.seeds), "known": list(self.known),
                "failed": list(self.failed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore view and seeds from :meth:`state_dict` (ValueError if malformed)."""
        try:
            entries: Iterable[Any] = state["view"]
            seeds: Iterable[Any] = state["seeds"]
        except (KeyError, TypeError):
            raise ValueError("Cyclon state must be a mapping with 'view' and 'seeds'") from None
        view = View.from_list(self.self_address, self.config.view_size, entries)
        new_seeds = list(seeds)
        if not all(isinstance(s, str) and s for s in new_seeds):
            raise ValueError("Cyclon state 'seeds' must be a list of non-empty strings")
        books = {}
        for name in ("known", "failed"):
            book = state.get(name, [])
            if not isinstance(book, (list, tuple)) or not all(isinstance(a, str) and a for a in book):
                raise ValueError(f"Cyclon state '{name}' must be a list of non-empty strings")
            books[name] = book
        self.view = view
        self.seeds = []
        for s in new_seeds:
            self._remember_seed(s)
        self.known = {}
        self._note(books["known"])
        cap = self.config.fallback_size
        self.failed = dict.fromkeys(a for a in books["failed"][-cap:] if cap and a != self.self_address)
        self._pending.clear()

    # -- internals ----------------------------------------------------------------

    def _remember_seed(self, address: Address) -> bool:
        if address == self.self_address or address in self.seeds:
            return False
        self.seeds.append(address)
        return True

    def _period(self, base: float) -> float:
        if not math.isfinite(base):
            return math.inf
        j = self.config.jitter
        if j == 0:
            return base
        return base * (1.0 + j * (2.0 * float(self.rng.random()) - 1.0))

    def _reseed_target(self, exclude: set[Address]) -> Address | None:
        """A seed or remembered address outside the view (and not being shuffled
        with): a seed half of the time when there are both; an address that
        failed before only when there is nothing else. The book is the
        more varied choice and spreads the load; the seeds are the one bridge
        that survives a long partition, since the book fills with the near side
        while the far side is out of reach."""
        view, pending = self.view, self._pending
        seeds = [a for a in self.seeds if a not in view and a not in pending and a not in exclude]
        book = [a for a in self.known
                if a not in view and a not in pending and a not in exclude and a not in self.seeds]
        if seeds and book:
            pool = seeds if self.rng.random() < 0.5 else book
        else:
            pool = seeds or book or [a for a in self.failed if a not in view and a not in exclude]
        if not pool:
            return None
        return pool[int(self.rng.random() * len(pool))]

    def _vouch(self, address: Address) -> None:
        """``address`` answered a request of ours: its entries age at the normal pace."""
        self._strikes.pop(address, None)
        self.failed.pop(address, None)
        vouched = self.vouched
        if address not in vouched:
            vouched[address] = None
            self._trim(vouched)

    def _trim(self, table: dict[Address, Any]) -> None:
        while len(table) > self._memory:
            del table[next(iter(table))]

    def _shuffle(self, now: float) -> tuple[Address, ShuffleRequest] | None:
        """One Cyclon step: age, pop the oldest neighbour, send it a sample."""
        view = self.view
        step = self.config.unvouched_age_step
        view.increase_ages(1, extra=step - 1, spared=self.vouched)
        oldest = view.oldest()
        if oldest is None:
            return self._bootstrap_request(now)
        target = oldest.address
        view.remove(target)
        return self._make_request(now, target)

    def _make_request(self, now: float, target: Address) -> tuple[Address, ShuffleRequest]:
        sample = self.view.sample(self.config.shuffle_length - 1, self.rng, exclude=target)
        self._pending[target] = _Pending(now, tuple(d.address for d in sample))
        entries = (PeerDescriptor(self.self_address, 0), *sample)
        return target, ShuffleRequest(self.self_address, entries)

    def _bootstrap_request(self, now: float) -> tuple[Address, ShuffleRequest] | None:
        """Empty view: ask a random seed or remembered address, and tell it about
        (up to ℓ-1 of) the other seeds. Without that, seeds that are not
        configured to know each other each grow an island of the newcomers that
        happened to pick them, and the overlay never becomes connected.
        Remembered addresses that fail move to ``failed`` (``on_outcome``),
        asked only when nothing else is left."""
        candidates = self.seeds + [a for a in self.known if a not in self.seeds]
        if not candidates:
            candidates = list(self.failed)
        if not candidates:
            return None
        target = candidates[int(self.rng.random() * len(candidates))]
        others = [s for s in self.seeds if s != target]
        k = min(len(others), self.config.shuffle_length - 1)
        picks = self.rng.permutation(len(others))[:k] if k > 0 else []
        entries = (
            PeerDescriptor(self.self_address, 0),
            *(PeerDescriptor(others[int(i)], 0) for i in picks),
        )
        self._pending[target] = _Pending(now, ())
        return target, ShuffleRequest(self.self_address, entries)

    def _note(self, addresses: Iterable[Address]) -> None:
        """Remember addresses for the empty-view fallback (bounded, oldest out)."""
        cap = self.config.fallback_size
        if cap == 0:
            return
        known = self.known
        me = self.self_address
        for a in addresses:
            # First sighting only (no move-to-end): cheaper, and an evicted
            # address that is still around is soon seen, and added, again.
            if a not in known and a != me:
                known[a] = None
                if len(known) > cap:
                    del known[next(iter(known))]

    def _integrate(self, received: Sequence[PeerDescriptor], sent: Sequence[Address]) -> int:
        """Cyclon's merge: skip self and known entries, fill free slots, then
        overwrite the entries we sent to the partner (in the order sent).
        At most ``max_from_one`` entries are placed, and the rest of the
        message is ignored (eclipse: one sender never fills the view); returns
        how many more it could have placed.
        Every address looked at is also noted for the empty-view fallback
        (inlined here rather than calling ``_note``: this is the hottest loop of
        a large simulation)."""
        view = self.view
        self_addr = self.self_address
        known = self.known
        cap = self.config.fallback_size
        budget = self.config.max_from_one
        j = 0
        n_sent = len(sent)
        overwrite = True
        for desc in received:
            address = desc.address
            if address == self_addr:
                continue
            if cap and address not in known:
                known[address] = None
                if len(known) > cap:
                    del known[next(iter(known))]
            if not overwrite or address in view:
                continue
            if view.add(desc):
                budget -= 1
            else:
                while j < n_sent:
                    old = sent[j]
                    j += 1
                    if view.replace(old, desc):
                        budget -= 1
                        break
                else:
                    overwrite = False  # full and nothing left to overwrite
            if budget == 0:
                break
        return budget

    def _expire_pending(self, now: float) -> None:
        if not self._pending:
            return
        limit = now - self.config.effective_pending_timeout
        stale = [a for a, p in self._pending.items() if p.sent_at < limit]
        for a in stale:
            del self._pending[a]

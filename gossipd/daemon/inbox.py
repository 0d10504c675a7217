"""Backpressure: received models wait in a bounded queue; each sender has a rate.

A model POST is validated, queued and answered ``202`` at once; one trainer
takes the queue in order. The sender's request timeout therefore never covers
another model's training (which, with a timeout, cost the receiver its place
in the sender's view: load turned into churn). What bounds the load instead:

- :class:`Inbox`: at most ``capacity`` models wait, **one per sender**. A
  newer model from a sender whose previous one still waits takes its place in
  the line (the older one is superseded: the newer one has seen everything it
  had, and more). When the queue is full, a model is refused with ``503
  busy`` and a ``Retry-After`` (how long the queue takes to drain at the
  recent training speed): it walks to another peer instead, and nothing
  already accepted is dropped for it. The daemon refuses before even reading
  the body (``Daemon.refuse_early``): under a flood, reading and decoding
  what will be refused is what delays everyone else.
- :class:`RateLimit`: a token bucket per sender, over models and shuffles
  together: ``rate`` per second on average, bursts of ``burst``; beyond,
  ``429 too_many_requests`` with the seconds until the next token. It bounds
  how often one member can make us train, and how often it can shuffle with
  us (the eclipse bound of Cyclon is per message: this is per time).

Senders take 202, 429 and 503 alike as "alive" (``Outcome.DELIVERED`` /
``BUSY``): busy never costs a peer its place in a view.

Everything here runs on the event loop (no locks); the clock is passed in.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gossipd.core.messages import ModelMessage

__all__ = ["Inbox", "InboxFull", "Queued", "RateLimit"]


@dataclass(eq=False)
class Queued:
    """One waiting model; ``done`` is set for a sender that waits for the merge (see
    ``respond_async``): the JSON answer it gets."""

    msg: ModelMessage
    done: asyncio.Future[dict[str, Any]] | None = None

    def settle(self, answer: dict[str, Any]) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(answer)


class InboxFull(Exception):
    """No room for another sender's model; ``retry_after``: seconds until there likely is."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"inbox full; retry in {retry_after:.1f} s")
        self.retry_after = retry_after


@dataclass
class InboxStats:
    accepted: int = 0  # models queued (202)
    superseded: int = 0  # queued models replaced by a newer one from the same sender
    full: int = 0  # models refused with 503 (queue full)


class Inbox:
    """The bounded queue of received models, newest per sender (see the module doc)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[str, Queued] = OrderedDict()
        self._nonempty = asyncio.Event()
        self.stats = InboxStats()
        #: seconds per model, a moving average the trainer reports (for Retry-After)
        self.train_seconds = 0.05

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def put(self, msg: ModelMessage, *, wait: bool = False) -> Queued:
        """Queue ``msg`` (replacing its sender's waiting one); InboxFull if there is no room.
        ``wait``: the returned item's ``done`` future gets the merge's answer."""
        item = Queued(msg, asyncio.get_running_loop().create_future() if wait else None)
        old = self._items.get(msg.sender)
        if old is not None:
            self._items[msg.sender] = item  # its place in the line, the newer model
            old.settle({"merged": False, "superseded": True})
            self.stats.superseded += 1
        elif len(self._items) >= self.capacity:
            self.stats.full += 1
            raise InboxFull(self.retry_after())
        else:
            self._items[msg.sender] = item
        self.stats.accepted += 1
        self._nonempty.set()
        return item

    async def get(self) -> Queued:
        """The oldest waiting model (waits for one)."""
        while not self._items:
            self._nonempty.clear()
            await self._nonempty.wait()
        _, item = self._items.popitem(last=False)
        return item

    def note_training(self, seconds: float) -> None:
        self.train_seconds += 0.2 * (max(seconds, 0.0) - self.train_seconds)

    def retry_after(self) -> float:
        """Seconds the current queue takes to drain at the recent speed (at least 1)."""
        return max(1.0, (len(self._items) + 1) * self.train_seconds)

    def close(self, answer: dict[str, Any]) -> None:
        """Settle everything still waiting (shutdown)."""
        for item in self._items.values():
            item.settle(answer)
        self._items.clear()


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimit:
    """Token buckets per sender: ``rate`` tokens a second, at most ``burst`` saved up.
    At most ``max_senders`` buckets are kept (least recently seen out: a sender forgotten
    starts again with a full bucket)."""

    rate: float
    burst: float
    max_senders: int = 4096
    limited: int = 0  # requests refused
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1):
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={self.rate}, burst={self.burst}")

    def admit(self, sender: str, now: float) -> float:
        """0.0 if ``sender`` may send one message now (a token is taken), else the seconds
        until it may."""
        bucket = self._buckets.pop(sender, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        self._buckets[sender] = bucket  # most recently seen last
        if len(self._buckets) > self.max_senders:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        self.limited += 1
        return (1.0 - bucket.tokens) / self.rate

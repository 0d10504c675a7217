"""The interface every peer sampler offers to the gossip node.

A sampler is a pure state machine: it is handed the time and its inputs and
returns what to send. It owns a ``numpy.random.Generator`` given at construction
and never reads a clock or global randomness, so the simulator and the daemon
drive the very same object.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from peer_sampling.messages import Address, ShuffleReply, ShuffleRequest
from peer_sampling.outcome import Outcome


@runtime_checkable
class PeerSampler(Protocol):
    def select_peer(self) -> Address | None:
        """A random neighbour to gossip with, or None when none is known."""

    def peers(self) -> list[Address]:
        """The current neighbours (the out-links of this node in the overlay)."""

    def next_wakeup(self) -> float:
        """When ``on_tick`` next has work to do (``math.inf`` for static overlays)."""

    def on_tick(self, now: float) -> list[tuple[Address, ShuffleRequest]]:
        """Run timers that are due; return shuffle requests to send."""

    def on_request(self, now: float, request: ShuffleRequest) -> ShuffleReply | None:
        """Answer a partner's shuffle request (None if this sampler does not shuffle)."""

    def on_reply(self, now: float, reply: ShuffleReply) -> None:
        """Take in the answer to a shuffle this node started (the partner is alive)."""

    def on_outcome(self, now: float, address: Address, outcome: Outcome) -> None:
        """What became of a request to ``address`` that got no shuffle reply
        (see :class:`~peer_sampling.outcome.Outcome` for what each one means)."""

    def add_seed(self, address: Address) -> None:
        """Learn a new bootstrap address (configured seeds, restored state)."""

    def introduce(self, now: float, address: Address) -> list[tuple[Address, ShuffleRequest]]:
        """An admin join: add ``address`` as a seed; return any shuffle to start with it now."""

"""Peer-sampling messages and descriptors: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

Address = str


@dataclass(frozen=True, slots=True)
class PeerDescriptor:
    """A pointer to a peer plus how old that pointer is (in shuffle rounds).

    Age grows by one every time the holder shuffles; Cyclon contacts the oldest
    entry first, which is how pointers to dead peers are found and dropped.
    """

    address: Address
    age: int = 0


@dataclass(frozen=True, slots=True)
class ShuffleRequest:
    """Sent by the shuffle initiator: its fresh self-descriptor plus others."""

    sender: Address
    entries: tuple[PeerDescriptor, ...]


@dataclass(frozen=True, slots=True)
class ShuffleReply:
    """The partner's answer: up to as many entries from its own view."""

    sender: Address
    entries: tuple[PeerDescriptor, ...]

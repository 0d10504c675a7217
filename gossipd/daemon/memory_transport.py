"""Many daemons in one process: an in-memory twin of the HTTP transport.

A :class:`MemoryNetwork` connects daemons by their advertised addresses
(``http://n1.test:7070``; nothing is resolved or bound). Each daemon gets a
:class:`MemoryTransport` from it (``Daemon(config, transport=net.transport(
address))``): the daemon's sealed bytes go straight to the receiving daemon's
peer handler, the very code the HTTP routes call, and its answer comes back.
On the way, the network can:

- **delay** every request and every reply by ``delay`` seconds;
- **drop** each request or reply with probability ``drop`` (seeded);
- **partition**: ``partition(side_a, side_b)`` cuts every link between the
  sides until ``heal()``, as a cut network does: packets vanish, no reset.

It produces what the real network would, and the driver maps it the same way
(``gossipd.daemon.transport``): a lost request or reply, or a cut, is a
``timeout`` after the sender's request timeout; an address nobody serves
(never started, or stopped) refuses the connection (``unreachable``); a
handler that raises answers 500 (``reply lost``), as aiohttp does. With a
:class:`~gossipd.daemon.clock.VirtualTimeLoop`, minutes of a network run in
seconds: the partition test in ``tests/test_daemon_memory.py``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Iterable

import numpy as np

from gossipd.daemon.transport import Answer, PeerHandler, SendFailed
from peer_sampling.outcome import Outcome

__all__ = ["MemoryNetwork", "MemoryTransport"]

log = logging.getLogger(__name__)


class MemoryNetwork:
    """Daemons of one process, by address; see the module doc."""

    def __init__(self, *, delay: float = 0.005, drop: float = 0.0, seed: int = 0) -> None:
        if not (0.0 <= drop <= 1.0) or not (delay >= 0 and math.isfinite(delay)):
            raise ValueError(f"need 0 <= drop <= 1 and a finite delay >= 0, got drop={drop}, delay={delay}")
        self.delay = delay
        self.drop = drop
        self.rng = np.random.default_rng(seed)
        self.handlers: dict[str, PeerHandler] = {}
        self._side: dict[str, int] = {}
        #: what became of every request, by outcome (delivered: an answer came back)
        self.outcomes: Counter[Outcome] = Counter()

    def transport(self, address: str, *, timeout: float = 5.0) -> MemoryTransport:
        """The transport of the daemon that will serve at ``address`` (its request timeout: ``timeout``)."""
        return MemoryTransport(self, address, timeout)

    # -- faults ----------------------------------------------------------------------------

    def partition(self, *sides: Iterable[str]) -> None:
        """Cut every link between two addresses on different sides (an address on no side
        reaches everyone)."""
        self._side = {a: i for i, side in enumerate(sides) for a in side}

    def heal(self) -> None:
        self._side = {}

    def connected(self, a: str, b: str) -> bool:
        sa, sb = self._side.get(a), self._side.get(b)
        return sa is None or sb is None or sa == sb

    def _lost(self, a: str, b: str) -> bool:
        """Whether one packet from ``a`` to ``b`` is lost now (cut, or dropped)."""
        return not self.connected(a, b) or (self.drop > 0 and float(self.rng.random()) < self.drop)

    # -- delivery ----------------------------------------------------------------------------

    async def deliver(self, sender: str, peer: str, path: str, body: bytes, timeout: float) -> Answer:
        try:
            async with asyncio.timeout(timeout):
                answer = await self._round_trip(sender, peer, path, body)
        except TimeoutError:
            self.outcomes[Outcome.TIMEOUT] += 1
            raise SendFailed(Outcome.TIMEOUT, f"timed out after {timeout:g}s") from None
        except SendFailed as failed:
            self.outcomes[failed.outcome] += 1
            raise
        self.outcomes[Outcome.DELIVERED] += 1
        return answer

    async def _round_trip(self, sender: str, peer: str, path: str, body: bytes) -> Answer:
        await asyncio.sleep(self.delay)
        if self._lost(sender, peer):
            await asyncio.Event().wait()  # nothing arrives: the sender's timeout ends this
        handler = self.handlers.get(peer)
        if handler is None:
            raise SendFailed(Outcome.UNREACHABLE, "connection refused")
        try:
            answer = await handler(path, body, sender, respond_async=True)
        except Exception:  # what aiohttp does with a handler that raises: log it, answer 500
            log.exception("the handler of %s raised on %s from %s", peer, path, sender)
            answer = Answer.error(500, "internal_error", "the handler raised (see the receiver's log)")
        await asyncio.sleep(self.delay)
        if self._lost(peer, sender):
            await asyncio.Event().wait()  # the receiver acted, the sender never learns it
        return answer


class MemoryTransport:
    """One daemon's end of a :class:`MemoryNetwork` (implements ``Transport``)."""

    def __init__(self, network: MemoryNetwork, address: str, timeout: float) -> None:
        self.network = network
        self.address = address
        self.timeout = timeout

    async def listen(self, handler: PeerHandler) -> str:
        if self.address in self.network.handlers:
            raise ValueError(f"{self.address} is served already")
        self.network.handlers[self.address] = handler
        return self.address

    async def post(self, peer: str, path: str, body: bytes | bytearray) -> Answer:
        # bytes, as a socket would hand them over: the receiver's views are read-only
        return await self.network.deliver(self.address, peer, path, bytes(body), self.timeout)

    async def close(self) -> None:
        """Stop serving: from now on this address refuses connections."""
        self.network.handlers.pop(self.address, None)

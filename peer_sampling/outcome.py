"""What became of a request this node sent: one vocabulary for both drivers.

The simulator and the daemon each turn their own events (a virtual message
lost on a cut, an aiohttp ``ClientConnectorError``, a 503) into one of these
outcomes, and the node core decides once, here and in the sampler, what each
means. So a simulated failure means what a real one does.

Every request a node sends gets exactly one answer from its driver: either
the reply to a shuffle (``on_shuffle_reply``, which implies ``DELIVERED``) or
one ``Outcome`` (``on_outcome``), never both and never none.
"""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """The result of one request, as the sender sees it.

    ======== ============================== =====================================
    outcome  seen as                        what the sender does
    ======== ============================== =====================================
    DELIVERED the peer answered 2xx          trusts the peer (answered us); clears
                                             its timeout strikes
    BUSY     the peer answered 'busy'       same as DELIVERED: alive, just loaded.
             (429, 503)                     Busy never counts against a peer.
    REFUSED  the peer answered 4xx, or a    drops it from the view and the
             reply we cannot decode         fallback book: it will not take our
                                            messages (other cluster, key, model,
                                            protocol), so it is no use as a peer
    UNREACHABLE connection refused, no      drops it from the view and the
             route, DNS failure             fallback book (seeds stay seeds)
    TIMEOUT  no answer within the request   one strike; ``max_timeouts``
             timeout (request or reply      consecutive strikes count as
             lost, peer overloaded or cut   UNREACHABLE. One lost packet or one
             off)                           slow answer does not cost a peer.
    REPLY_LOST the connection broke after   as TIMEOUT: the peer may well have
             the request went out (reset,   acted on the request; we cannot tell
             truncated body, 5xx other
             than 503)
    ======== ============================== =====================================

    A shuffle partner has already left the view when the request goes out
    (Cyclon contacts and removes its oldest entry), so a failed shuffle only
    decides whether the address stays in the fallback book.
    """

    DELIVERED = "delivered"
    BUSY = "busy"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    REPLY_LOST = "reply_lost"

    @property
    def alive(self) -> bool:
        """The peer answered in time: it exists and speaks our protocol."""
        return self in (Outcome.DELIVERED, Outcome.BUSY)

    @property
    def fatal(self) -> bool:
        """Drop the peer at once (no strikes)."""
        return self in (Outcome.REFUSED, Outcome.UNREACHABLE)

    @property
    def strike(self) -> bool:
        """Counts towards ``max_timeouts``; the peer is dropped only after several in a row."""
        return self in (Outcome.TIMEOUT, Outcome.REPLY_LOST)

    @property
    def failed(self) -> bool:
        """The request did not do what it was for (counted in ``send_failures``)."""
        return not self.alive


__all__ = ["Outcome"]

"""Peer messages in and out of one node: sealed or plain, addresses screened, refusals counted.

The one seam between bytes and the node for everything the network sends or
receives (``docs/security.md``). The driver hands it bodies and messages; the
transport underneath (HTTP today) never sees a key, and the node above never
sees a body:

- :meth:`PeerGate.seal`: a message to bytes for the peer advertised as ``to``
  (``PeerCodec``: sealed with the keyring's first key, or plain v1 without one);
- :meth:`PeerGate.open`: bytes from the network to a message, opened and
  checked (``PeerCodec.decode``), then its addresses screened
  (``addresses.screen_message``): a refused sender refuses the message, a
  refused shuffle entry is dropped and counted, never stored;
- :meth:`PeerGate.open_reply`: the same for a shuffle reply, which must also
  come from the peer that was asked;
- counters of refusals per code and of dropped addresses, and :meth:`reload`
  to swap the keyring at run time (SIGHUP).

The time is Unix wall-clock seconds (``clock``), never the event loop's
monotonic clock: seals carry timestamps other nodes compare with theirs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from gossipd import addresses
from gossipd.addresses import PeerPolicy
from gossipd.core.messages import Message, ShuffleReply
from gossipd.envelope import PeerCodec
from gossipd.security import Keyring
from gossipd.wire import WireError

__all__ = ["DropReport", "PeerGate"]

DropReport = Callable[[str, tuple[tuple[str, str], ...]], None]
"""``report(sender, dropped)``: shuffle entries ``(address, reason)`` refused in a message from ``sender``."""


class PeerGate:
    """Seal, open and screen one node's peer messages; count what is refused."""

    def __init__(self, codec: PeerCodec, policy: PeerPolicy, *, clock: Callable[[], float] = time.time,
                 on_drop: DropReport | None = None) -> None:
        self.codec = codec
        self.policy = policy
        self.clock = clock
        self.on_drop = on_drop
        self.rejections: Counter[str] = Counter()
        self.dropped_addresses = 0
        self._lock = threading.Lock()  # counters may be bumped from the trainer thread's callers too

    @property
    def sealed(self) -> bool:
        return self.codec.sealed

    def key_ids(self) -> list[str]:
        keyring = self.codec.keyring
        return keyring.ids() if keyring is not None else []

    def reload(self, keyring: Keyring) -> None:
        """Seal with ``keyring``'s first key and open with all of them from now on; nonces seen stay remembered."""
        self.codec.reload(keyring)

    # -- out --------------------------------------------------------------------------

    def seal(self, message: Message, to: str) -> bytes | bytearray:
        return self.codec.encode(message, to=to, now=self.clock())

    # -- in ---------------------------------------------------------------------------

    def open(self, body: bytes | bytearray | memoryview) -> Message:
        """A message from the network, opened, checked and screened; WireError (not counted here) otherwise."""
        message = self.codec.decode(body, now=self.clock())
        message, dropped = addresses.screen_message(message, self.policy)
        if dropped:
            with self._lock:
                self.dropped_addresses += len(dropped)
            if self.on_drop is not None:
                self.on_drop(message.sender, dropped)
        return message

    def open_reply(self, body: bytes | bytearray | memoryview, peer: str) -> ShuffleReply:
        """The shuffle reply of ``peer``; WireError if it is anything else, or from anyone else.

        The refusal is counted here (replies have no HTTP answer to carry it).
        """
        try:
            message = self.open(body)
            if not isinstance(message, ShuffleReply):
                raise WireError(400, "wrong_type", f"expected a shuffle_reply, got a {type(message).__name__}")
            if message.sender != peer:
                # A key holder could answer for another node; the reply must come from the peer asked.
                raise WireError(401, "wrong_sender", f"the reply claims to come from {message.sender!r}, "
                                                     f"but {peer!r} was asked")
        except WireError as err:
            self.count(err.code)
            raise
        return message

    # -- counters -----------------------------------------------------------------------

    def count(self, code: str) -> None:
        with self._lock:
            self.rejections[code] += 1

    def report(self) -> dict[str, Any]:
        """For /v1/status: whether messages are sealed, key ids (public), refusals by code."""
        guard = self.codec.guard
        with self._lock:
            return {"sealed": self.sealed, "key_ids": self.key_ids(), "peer_allow": self._allow_text(),
                    "rejections": dict(sorted(self.rejections.items())),
                    "dropped_addresses": self.dropped_addresses,
                    "replay_memory": {"entries": guard.entries, "capacity": guard.capacity,
                                      "evicted": guard.evicted, "window_s": guard.window}}

    def _allow_text(self) -> list[str]:
        allow = self.policy.allow
        return ["*"] if allow is None else [str(n) for n in allow]

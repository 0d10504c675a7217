"""How a daemon's peer messages travel, and what became of each: one vocabulary.

The driver hands a :class:`Transport` sealed bytes for a peer and a path; the
transport either returns the peer's :class:`Answer` (an HTTP status, a body,
a ``Retry-After``) or raises :class:`SendFailed` carrying the
:class:`~peer_sampling.outcome.Outcome` of the failure. The driver then turns
an answer into an outcome with :func:`outcome_of_status`, so every send path
(pushes, shuffles, admin joins), over every transport, means the same by the
same result, and the simulator means it too (``docs/architecture.md``,
"One failure semantics"):

=========================================== ================
what the sender saw                         outcome
=========================================== ================
2xx (200, 202 queued); a decodable shuffle  delivered
reply (``on_shuffle_reply``)
429, 503 (busy, starting, rate-limited)     busy
any other 4xx, 1xx/3xx; an undecodable or   refused
forged shuffle reply; TLS trust failures
connection refused, DNS failure, no route   unreachable
no answer within the request timeout        timeout
connection broken after sending (reset,     reply lost
disconnected, truncated body); 5xx but 503
=========================================== ================

Two transports ship: :class:`gossipd.daemon.http.HttpTransport` (aiohttp,
the default) and :class:`gossipd.daemon.memory_transport.MemoryTransport`
(many daemons in one process, for tests, with drops, delays and cuts). Both
carry the bytes :class:`~gossipd.daemon.gate.PeerGate` sealed: a transport
never sees a key.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from peer_sampling.outcome import Outcome

__all__ = ["Answer", "MODEL_PATH", "MSGPACK", "PeerHandler", "SHUFFLE_PATH", "SendFailed", "Transport",
           "outcome_of_error", "outcome_of_status"]

MODEL_PATH = "/v1/gossip/model"
SHUFFLE_PATH = "/v1/gossip/shuffle"
#: What peers send, and what the peer endpoints and /v1/model answer.
MSGPACK = "application/x-msgpack"


@dataclass(frozen=True)
class Answer:
    """A peer's answer to one message, whatever carried it."""

    status: int
    body: bytes | bytearray = b""
    content_type: str = "application/json"
    #: seconds the peer asks us to wait before the next message (``Retry-After``), if it said
    retry_after: float | None = None

    @classmethod
    def json(cls, status: int, doc: dict[str, Any], *, retry_after: float | None = None) -> Answer:
        return cls(status, json.dumps(doc).encode(), "application/json", retry_after)

    @classmethod
    def error(cls, status: int, code: str, detail: str, *, retry_after: float | None = None,
              **extra: Any) -> Answer:
        """The JSON error body every gossipd error has: ``{"error": code, "detail": sentence}``."""
        return cls.json(status, {"error": code, "detail": detail, **extra}, retry_after=retry_after)

    def http_headers(self) -> dict[str, str]:
        """Headers to send with it (``Retry-After`` in whole seconds, at least 1)."""
        out: dict[str, str] = {}
        if self.retry_after is not None:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out


class SendFailed(Exception):
    """No answer came back: ``outcome`` says how (never DELIVERED or BUSY), ``reason`` in words."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class Transport(Protocol):
    """How a daemon's peer messages travel (both ways)."""

    async def listen(self, handler: PeerHandler) -> str | None:
        """Serve incoming peer messages with ``handler``; the address this node is reached at.
        None: the daemon's own HTTP server serves them (HTTP), and the address is its URL."""

    async def post(self, peer: str, path: str, body: bytes | bytearray) -> Answer:
        """Deliver ``body`` to ``path`` at ``peer`` within the request timeout: the answer,
        or SendFailed."""

    async def close(self) -> None: ...


class PeerHandler(Protocol):
    """The receiving side: what a daemon does with a peer message (``Daemon.peer_message``).

    ``remote``: who sent it, as the transport knows it (an IP; in memory, the
    address), for logs. ``respond_async``: the sender takes ``202 queued``
    (every sender since this answer exists says so; older ones wait for the merge).
    """

    def __call__(self, path: str, body: bytes, remote: str | None, *,
                 respond_async: bool) -> Awaitable[Answer]: ...


def outcome_of_status(status: int) -> Outcome:
    """What an HTTP status means for the peer that answered it (see the module's table)."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (429, 503):
        return Outcome.BUSY  # alive, only loaded (or still starting): never a reason to drop it
    if 500 <= status < 600:
        return Outcome.REPLY_LOST  # the peer may have acted on the message; a strike, not a verdict
    return Outcome.REFUSED  # 4xx (other cluster, key, model, protocol), or not our protocol at all


def outcome_of_error(exc: BaseException) -> Outcome:
    """What an exception raised while sending means (aiohttp's and the OS's), first match wins:
    TLS trust failures -> refused; failing to connect -> unreachable; no answer in time ->
    timeout; a connection broken once the request was out -> reply lost; a malformed HTTP
    answer or a URL we cannot use -> refused; anything else -> reply lost (a strike: we
    cannot tell whether the peer acted on it)."""
    import aiohttp  # only when something failed: the in-memory transport never needs it

    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch, ssl.SSLError)):
        return Outcome.REFUSED  # it answered, but we do not trust it (or it does not trust us)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Outcome.UNREACHABLE  # refused, DNS, no route: before any byte of the request left
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):  # ServerTimeoutError is one too
        return Outcome.TIMEOUT
    if isinstance(exc, (aiohttp.ServerConnectionError, aiohttp.ClientPayloadError, aiohttp.ClientOSError,
                        ConnectionError)):
        return Outcome.REPLY_LOST
    if isinstance(exc, (aiohttp.ClientResponseError, aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return Outcome.REFUSED
    return Outcome.REPLY_LOST

"""The daemon's listening socket, hardened against hostile clients.

aiohttp serves the routes (``gossipd.daemon.http``); this module decides which
connections reach it and for how long:

- **A cap on open connections** (``max_connections``), kept below the
  file-descriptor limit so that ``accept()`` never fails with EMFILE (asyncio
  then stops accepting for a whole second). At the cap a new connection
  *evicts* the oldest one that has not sent a complete request yet (a slow
  client), else the oldest idle keep-alive one; only when every connection is
  busy with a request is the new one refused, with a 503 JSON answer. Evicting
  instead of refusing is what keeps ``/healthz`` and honest peers reachable
  while slow connections pile up: a slow client holds a slot only until
  someone needs it.
- **A header timeout**: from connecting, or from the end of the previous
  answer on the connection, a client has ``header_timeout`` seconds to send a
  complete request head (so it is the keep-alive idle limit too); the TLS
  handshake gets the same. The body has its own timeout (``http.py``).
- **JSON for HTTP parse errors** like every other error, logged through a
  callback (a rate-limited summary) instead of one traceback each.

TLS: asyncio hands a connection to the protocol only once its handshake is
done, so connections still in their handshake are bounded by the handshake
timeout rather than by the cap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["ConnectionGuard", "GuardedSite", "JsonErrorHandler", "ServerLimits", "fd_limit"]

#: File descriptors kept for the daemon itself (logs, checkpoints, outgoing peer
#: connections, the event loop) and for connections between accept() and the
#: guard (a few accept batches) or between eviction and close (one batch).
FD_RESERVE = 256
#: Connections asyncio accepts per wake-up. asyncio hands them to the guard (and
#: closes evicted ones) only on later loop iterations, so a large batch under a
#: connection flood holds hundreds of descriptors the cap does not see yet.
ACCEPT_BATCH = 32
#: The kernel's queue of connections not accepted yet: deep, so that a flood
#: makes a probe wait its turn (milliseconds) instead of losing its SYN (1 s).
LISTEN_QUEUE = 1024

ErrorReport = Callable[[str, str, str, "BaseException | None"], None]
"""``report(kind, remote, detail, exc)``: one refused or failed request, for a rate-limited log."""


def fd_limit() -> int | None:
    """The soft RLIMIT_NOFILE of this process (None where there is none)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int
    header_timeout: float
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    #: the longest first request head a connection may send (peers and tools send a few hundred
    #: bytes); it is buffered before aiohttp sees it, so this bounds a slow client's memory
    max_head: int = 16384

    def within_fd_limit(self, limit: int | None) -> ServerLimits:
        """These limits with ``max_connections`` lowered to fit ``limit`` descriptors (at least 16)."""
        if limit is None or self.max_connections <= limit - FD_RESERVE:
            return self
        return dataclasses.replace(self, max_connections=max(16, limit - FD_RESERVE))


def _refusal(status: int, reason: str, code: str, detail: str) -> bytes:
    body = json.dumps({"error": code, "detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


class _Connection(asyncio.Protocol):
    """One accepted connection. aiohttp's handler (a parser and a task: the costly part) is made
    only once the first request head is complete; until then the bytes wait here, so a slow client
    costs this small object and a timer."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.handler: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.head: bytearray | None = bytearray()  # the first request head, until it is complete
        self.busy = 0  # requests in progress (0 or 1: HTTP/1.1 without pipelining)
        self.counted = False
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.guard.admit(self):
            self.head = None

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
            return
        if self.head is None or not self.counted:
            return  # refused or evicted: nothing more to read
        start = max(0, len(self.head) - 3)
        self.head += data
        if b"\r\n\r\n" in self.head[start:] or b"\n\n" in self.head[start:]:
            head, self.head = bytes(self.head), None
            self.handler = self.guard.make_handler()
            self.handler.connection_made(self.transport)  # type: ignore[arg-type]
            self.handler.data_received(head)
        elif len(self.head) > self.guard.max_head:
            self.head = None
            assert self.transport is not None
            self.transport.write(_refusal(431, "Request Header Fields Too Large", "bad_request",
                                          f"the request head is longer than {self.guard.max_head} bytes"))
            self.guard.drop(self)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self)
        if self.handler is not None:
            self.handler.connection_lost(exc)
            self.handler = None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    # -- the guard's side ---------------------------------------------------------

    def arm(self, delay: float) -> None:
        self.disarm()
        self.timer = asyncio.get_running_loop().call_later(delay, self.guard.timed_out, self)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        self.disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class ConnectionGuard:
    """The protocol factory given to ``create_server``: counts, times out and evicts connections.

    ``make_handler`` builds aiohttp's protocol for an admitted connection;
    :meth:`middleware` (the outermost of the app) tells the guard when a
    request starts and ends, so it knows which connections are busy.
    """

    def __init__(self, limits: ServerLimits, report: ErrorReport | None = None) -> None:
        self.limits = limits
        self.report = report
        self.make_handler: Callable[[], asyncio.Protocol] = _not_started
        self.open = 0
        self.refused = 0  # turned away with 503: every connection was busy
        self.evicted = 0  # closed at the cap to make room for a newer one
        self.timed_out_count = 0  # closed for not sending a request head in time
        # Connections not busy with a request, oldest first: those that never
        # sent one (fresh) go before those idle between requests.
        self._fresh: OrderedDict[_Connection, None] = OrderedDict()
        self._idle: OrderedDict[_Connection, None] = OrderedDict()
        self._by_transport: dict[Any, _Connection] = {}

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)

    @property
    def max_head(self) -> int:
        return self.limits.max_head

    def drop(self, conn: _Connection) -> None:
        self._forget(conn)
        conn.close()

    def stats(self) -> dict[str, int]:
        return {"open": self.open, "max": self.limits.max_connections, "refused": self.refused,
                "evicted": self.evicted, "timed_out": self.timed_out_count}

    # -- lifecycle ----------------------------------------------------------------

    def admit(self, conn: _Connection) -> bool:
        if self.open >= self.limits.max_connections:
            victim = next(iter(self._fresh), None) or next(iter(self._idle), None)
            if victim is None:
                self.refused += 1
                self._report("too_many_connections", conn, "every connection is busy with a request")
                assert conn.transport is not None
                conn.transport.write(_refusal(503, "Service Unavailable", "too_many_connections",
                                              f"this node serves at most {self.limits.max_connections} "
                                              "connections at once, all busy; try again shortly"))
                conn.transport.close()
                return False
            self.evicted += 1
            self._forget(victim)
            victim.close()
        self.open += 1
        conn.counted = True
        self._by_transport[conn.transport] = conn
        self._fresh[conn] = None
        conn.arm(self.limits.header_timeout)
        return True

    def release(self, conn: _Connection) -> None:
        self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        conn.disarm()
        self._fresh.pop(conn, None)
        self._idle.pop(conn, None)
        if conn.counted:
            conn.counted = False
            self.open -= 1
            self._by_transport.pop(conn.transport, None)

    def timed_out(self, conn: _Connection) -> None:
        conn.timer = None
        if conn.busy or not conn.counted:
            return
        transport = conn.transport
        if transport is not None and transport.get_write_buffer_size() > 0:
            conn.arm(self.limits.header_timeout)  # still sending the previous answer
            return
        self.timed_out_count += 1
        self._forget(conn)
        conn.close()

    # -- requests -----------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        conn = self._by_transport.get(request.transport)
        if conn is None:  # not one of ours (a test client)
            return await handler(request)
        conn.busy += 1
        conn.disarm()
        self._fresh.pop(conn, None)
        self._idle.pop(conn, None)
        try:
            return await handler(request)
        finally:
            conn.busy -= 1
            if not conn.busy and conn.counted:
                self._idle[conn] = None
                conn.arm(self.limits.header_timeout)

    def _report(self, kind: str, conn: _Connection, detail: str) -> None:
        if self.report is not None:
            peer = conn.transport.get_extra_info("peername") if conn.transport is not None else None
            self.report(kind, str(peer[0]) if peer else "?", detail, None)


def _not_started() -> asyncio.Protocol:
    raise RuntimeError("ConnectionGuard used before GuardedSite.start()")


class JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors (parse errors, 500s) in JSON.

    aiohttp answers a request it cannot parse before any route or middleware
    runs, in text/plain, and logs a traceback each time; a client sending
    garbage could fill the log. Here the answer is ``{"error", "detail"}`` and
    the event goes to ``report`` (rate-limited by the caller).
    """

    report: ErrorReport | None = None

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the answer is already on its way; cannot send an error instead")
        if status >= 500:
            code, detail = ("timeout", "the request took too long") if status == 504 else \
                ("internal_error", "the node failed to answer this request; its log says why")
        else:
            code = "bad_request"
            detail = f"not a valid HTTP request: {message or exc or 'malformed'}"
        if self.report is not None:
            self.report(code, str(request.remote), detail if status < 500 else repr(exc),
                        exc if status >= 500 else None)
        resp = web.json_response({"error": code, "detail": " ".join(str(detail).split())[:300]}, status=status)
        resp.force_close()
        return resp


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard` to :class:`JsonErrorHandler`."""

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, host: str, port: int, *,
                 ssl_context: Any = None) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=ACCEPT_BATCH)
        self._guard = guard
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        limits, guard = self._guard.limits, self._guard

        def make_handler() -> asyncio.Protocol:
            handler = JsonErrorHandler(
                server, loop=loop, access_log=None, keepalive_timeout=limits.header_timeout,
                max_line_size=limits.max_line_size, max_field_size=limits.max_field_size,
                max_headers=limits.max_headers)
            handler.report = guard.report
            return handler

        guard.make_handler = make_handler
        extra: dict[str, Any] = {}
        if self._ssl_context is not None:
            extra["ssl_handshake_timeout"] = limits.header_timeout
        self._server = await loop.create_server(
            guard, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog, reuse_address=True,
            family=socket.AF_UNSPEC, **extra)
        # asyncio uses one number for the kernel queue and its accept batch; deepen the queue only
        # (listen() on a listening socket resizes it; the dup shares the socket).
        for listening in self._server.sockets:
            with socket.socket(fileno=os.dup(listening.fileno())) as dup:
                dup.listen(LISTEN_QUEUE)

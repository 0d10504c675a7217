"""One failure semantics: what each result of a send means (gossipd/daemon/transport.py).

The HTTP transport against a fake peer on 127.0.0.1 that answers every way a
real one can (statuses, stalls, resets, truncated bodies, garbage, redirects,
untrusted TLS), and a port nobody listens on; the in-memory transport's cuts,
drops and stopped peers. Each must come out as the outcome the table in
``docs/architecture.md`` gives, so that a node decides about a peer the same
way whichever transport, or the simulator, carried the message.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from certs import make_ca  # noqa: E402

from gossipd.addresses import PeerPolicy  # noqa: E402
from gossipd.daemon.clock import run_virtual  # noqa: E402
from gossipd.daemon.http import HttpTransport  # noqa: E402
from gossipd.daemon.memory_transport import MemoryNetwork  # noqa: E402
from gossipd.daemon.tls import client_context, server_context  # noqa: E402
from gossipd.daemon.transport import Answer, SendFailed, outcome_of_status  # noqa: E402
from peer_sampling.outcome import Outcome  # noqa: E402

TIMEOUT = 0.5  # the transport's request timeout in these tests (a stalled peer costs this much)


@pytest.mark.parametrize("status, outcome", [
    (200, Outcome.DELIVERED), (202, Outcome.DELIVERED), (204, Outcome.DELIVERED),
    (429, Outcome.BUSY), (503, Outcome.BUSY),
    (400, Outcome.REFUSED), (401, Outcome.REFUSED), (403, Outcome.REFUSED), (404, Outcome.REFUSED),
    (409, Outcome.REFUSED), (413, Outcome.REFUSED), (415, Outcome.REFUSED),
    (301, Outcome.REFUSED), (307, Outcome.REFUSED), (101, Outcome.REFUSED),
    (500, Outcome.REPLY_LOST), (502, Outcome.REPLY_LOST), (504, Outcome.REPLY_LOST),
])
def test_status_to_outcome(status: int, outcome: Outcome) -> None:
    assert outcome_of_status(status) is outcome


class FakePeer:
    """An HTTP/1.1 peer, raw on asyncio streams, whose behaviour is chosen by the request path.

    ``/status/N``: answers N (``Retry-After: 7`` with 429 and 503); ``/stall``: never answers;
    ``/reset``: reads the request, then resets the connection; ``/truncated``: promises 100
    bytes of body, sends 10, closes; ``/garbage``: answers something that is not HTTP;
    ``/redirect``: 307 to ``/status/200`` (which counts its hits)."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.prefer: list[str] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> FakePeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            path = head.split()[1]
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
            await reader.readexactly(int(headers.get("Content-Length", "0")))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.hits[path] = self.hits.get(path, 0) + 1
        self.prefer.append(headers.get("Prefer", ""))
        if path == "/stall":
            await reader.read()  # until the client gives up and closes
        elif path == "/reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            writer.transport.abort()
            return
        elif path == "/truncated":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        elif path == "/garbage":
            writer.write(b"THIS IS NOT HTTP AT ALL\r\n\r\n")
        elif path == "/redirect":
            writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /status/200\r\nContent-Length: 0\r\n\r\n")
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            body = b'{"error": "x", "detail": "y"}'
            extra = "Retry-After: 7\r\n" if status in (429, 503) else ""
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()


@pytest.fixture
async def peer() -> AsyncIterator[FakePeer]:
    async with FakePeer() as fake:
        yield fake


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    t = HttpTransport(TIMEOUT, max_body=1 << 16)
    yield t
    await t.close()


async def outcome(transport: HttpTransport, url: str, path: str) -> tuple[Outcome, Answer | str]:
    try:
        answer = await transport.post(url, path, b"\x80")
    except SendFailed as failed:
        assert failed.outcome not in (Outcome.DELIVERED, Outcome.BUSY)
        return failed.outcome, failed.reason
    return outcome_of_status(answer.status), answer


@pytest.mark.parametrize("path, expected", [
    ("/status/200", Outcome.DELIVERED), ("/status/202", Outcome.DELIVERED),
    ("/status/429", Outcome.BUSY), ("/status/503", Outcome.BUSY),
    ("/status/400", Outcome.REFUSED), ("/status/409", Outcome.REFUSED),
    ("/status/500", Outcome.REPLY_LOST), ("/status/502", Outcome.REPLY_LOST),
    ("/stall", Outcome.TIMEOUT), ("/reset", Outcome.REPLY_LOST), ("/truncated", Outcome.REPLY_LOST),
    ("/garbage", Outcome.REFUSED), ("/redirect", Outcome.REFUSED),
])
async def test_every_way_a_peer_answers_maps_to_one_outcome(peer: FakePeer, transport: HttpTransport, path: str,
                                                             expected: Outcome) -> None:
    got, answer = await outcome(transport, peer.url, path)
    assert got is expected, answer
    assert peer.hits.get(path) == 1  # the request did go out, once
    if path in ("/status/429", "/status/503"):
        assert isinstance(answer, Answer) and answer.retry_after == 7.0
    if path == "/redirect":
        assert "/status/200" not in peer.hits  # never followed: a redirect could lead past peer_allow
    assert peer.prefer == ["respond-async"]  # every sender asks for 202 rather than waiting for the merge


async def test_nobody_listening_is_unreachable_and_a_refused_address_is_never_contacted(
        transport: HttpTransport) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: connection refused
        got, reason = await outcome(transport, closed, "/v1/gossip/model")
    assert got is Outcome.UNREACHABLE and reason == "connection refused"
    fenced = HttpTransport(TIMEOUT, 1 << 16, PeerPolicy.from_cidrs(("10.0.0.0/8",)))
    try:
        got, reason = await outcome(fenced, closed, "/v1/gossip/model")
    finally:
        await fenced.close()
    assert got is Outcome.REFUSED and "not contacted" in str(reason)


async def test_an_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    """TLS trust failures mean this peer will never be one of ours: refused, not unreachable."""
    ours, theirs = make_ca(tmp_path / "ours"), make_ca(tmp_path / "theirs", "other-ca")
    leaf = theirs.issue(tmp_path / "theirs", "peer")

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(ok, "127.0.0.1", 0, ssl=server_context(leaf.cert, leaf.key))
    port = server.sockets[0].getsockname()[1]
    t = HttpTransport(TIMEOUT, 1 << 16, ssl_context=client_context(ca=ours.cert))
    try:
        got, reason = await outcome(t, f"https://127.0.0.1:{port}", "/v1/gossip/model")
    finally:
        await t.close()
        server.close()
    assert got is Outcome.REFUSED, reason


def test_the_memory_transport_fails_as_the_network_does() -> None:
    """Cut or lost: a timeout after the request timeout; nobody serving: unreachable; a
    handler that raises: 500 (reply lost); a reply lost after the receiver acted: timeout."""
    acted: list[str] = []
    net = MemoryNetwork(delay=0.01)

    async def handler(path: str, body: bytes, remote: str | None, *, respond_async: bool) -> Answer:
        acted.append(path)
        if path == "/raise":
            raise RuntimeError("a bug in the receiver")
        if path == "/cut-after":  # the network is cut while the request is being handled
            net.partition(["http://a.test:1"], ["http://b.test:1"])
        return Answer.json(202, {"queued": True})

    async def main(clock) -> None:
        a, b = net.transport("http://a.test:1", timeout=5.0), net.transport("http://b.test:1", timeout=5.0)
        await b.listen(handler)
        assert (await a.post("http://b.test:1", "/ok", b"x")).status == 202
        assert outcome_of_status((await a.post("http://b.test:1", "/raise", b"x")).status) is Outcome.REPLY_LOST
        with pytest.raises(SendFailed) as nobody:
            await a.post("http://c.test:1", "/ok", b"x")
        assert nobody.value.outcome is Outcome.UNREACHABLE
        net.partition(["http://a.test:1"], ["http://b.test:1"])
        t0 = clock.now()
        with pytest.raises(SendFailed) as cut:
            await a.post("http://b.test:1", "/cut", b"x")
        assert cut.value.outcome is Outcome.TIMEOUT and clock.now() - t0 == pytest.approx(5.0)
        assert "/cut" not in acted  # the request never arrived
        net.heal()
        with pytest.raises(SendFailed) as reply_lost:
            await a.post("http://b.test:1", "/cut-after", b"x")
        assert reply_lost.value.outcome is Outcome.TIMEOUT and "/cut-after" in acted  # acted, never told
        net.heal()
        lossy = MemoryNetwork(drop=1.0)
        c, d = lossy.transport("http://c.test:1", timeout=2.0), lossy.transport("http://d.test:1", timeout=2.0)
        await d.listen(handler)
        with pytest.raises(SendFailed) as lost:
            await c.post("http://d.test:1", "/lost", b"x")
        assert lost.value.outcome is Outcome.TIMEOUT and "/lost" not in acted
        await b.close()
        with pytest.raises(SendFailed) as stopped:
            await a.post("http://b.test:1", "/ok", b"x")
        assert stopped.value.outcome is Outcome.UNREACHABLE

    run_virtual(main)

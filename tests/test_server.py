"""The hardened listening socket (gossipd/daemon/server.py) over real sockets on 127.0.0.1, in-process.

The cap's three outcomes (admit, evict the oldest slow or idle connection,
refuse with 503 when all are busy), the header timeout and JSON for what
aiohttp cannot parse. The same guard under 1,500 slow clients against a real
daemon: tests/test_daemon_security.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gossipd.daemon.server import ConnectionGuard, GuardedSite, ServerLimits

pytestmark = pytest.mark.timeout(60)

CAP = 16


class Served:
    def __init__(self, guard: ConnectionGuard, port: int, release: asyncio.Event) -> None:
        self.guard, self.port, self.release = guard, port, release
        self.reports: list[tuple[str, str]] = []

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"slow": True})

    async def fast(request: web.Request) -> web.Response:
        return web.json_response({"fast": True})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    reports: list[tuple[str, str]] = []
    guard = ConnectionGuard(ServerLimits(CAP, header_timeout=0.5),
                            report=lambda kind, remote, detail, exc: reports.append((kind, detail)))
    app = web.Application(middlewares=[guard.middleware])
    app.add_routes([web.get("/slow", slow), web.get("/fast", fast), web.get("/boom", boom)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = GuardedSite(runner, guard, "127.0.0.1", 0)
    await site.start()
    s = Served(guard, runner.addresses[0][1], release)
    s.reports = reports
    try:
        yield s
    finally:
        release.set()
        await runner.cleanup()


async def request(s: Served, path: str, writer_reader: Any = None) -> tuple[int, dict[str, Any]]:
    reader, writer = writer_reader or await s.connect()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    body = await reader.readexactly(length)
    if writer_reader is None:
        writer.close()
    return int(head.split()[1]), json.loads(body)


async def closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True once the server has closed the connection (EOF) within ``timeout``."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except (asyncio.TimeoutError, ConnectionError):
        return False
    return True


async def test_at_the_cap_a_new_connection_evicts_the_oldest_slow_one(served: Served) -> None:
    slow = [await served.connect() for _ in range(CAP)]
    for _, w in slow:
        w.write(b"GET /fast HTTP/1.1\r\n")  # a head that never ends
    await asyncio.sleep(0.05)
    assert served.guard.open == CAP
    assert await request(served, "/fast") == (200, {"fast": True})  # evicts the oldest
    assert await closed(slow[0][0], 1.0)
    assert served.guard.evicted >= 1 and served.guard.open <= CAP
    for _, w in slow:
        w.close()


async def test_idle_keep_alive_connections_go_after_slow_ones(served: Served) -> None:
    idle = await served.connect()
    assert await request(served, "/fast", idle) == (200, {"fast": True})  # served once, now idle
    slow = [await served.connect() for _ in range(CAP - 1)]
    await asyncio.sleep(0.05)
    assert await request(served, "/fast") == (200, {"fast": True})
    assert await closed(slow[0][0], 1.0)  # the slow one went first, though the idle one is older
    assert await request(served, "/fast", idle) == (200, {"fast": True})
    for _, w in [idle, *slow]:
        w.close()


async def test_when_every_connection_is_busy_the_next_one_gets_503(served: Served) -> None:
    busy = [asyncio.create_task(request(served, "/slow")) for _ in range(CAP)]
    await asyncio.sleep(0.2)
    status, body = await request(served, "/fast")
    assert status == 503 and body["error"] == "too_many_connections" and body["detail"]
    assert served.guard.refused == 1 and ("too_many_connections", "every connection is busy with a request") \
        in served.reports
    served.release.set()
    assert [await t for t in busy] == [(200, {"slow": True})] * CAP


async def test_a_request_head_not_finished_in_time_is_cut_off(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n")
    assert await closed(reader)  # header_timeout = 0.5 s
    assert served.guard.timed_out_count == 1 and served.guard.open == 0
    # Between requests the same limit applies (keep-alive idle).
    reader, writer = await served.connect()
    assert await request(served, "/fast", (reader, writer)) == (200, {"fast": True})
    assert await closed(reader)
    writer.close()


async def test_what_aiohttp_cannot_parse_or_serve_answers_json(served: Served) -> None:
    for raw, status in ((b"BREW /pot HTCPCP/1.0\r\n\r\n", 400), (b"GET /fast HTTP/1.1\r\nBad Header\r\n\r\n", 400)):
        reader, writer = await served.connect()
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        assert int(head.split()[1]) == status and b"application/json" in head
        assert json.loads(await reader.read(65536))["error"] == "bad_request"
        writer.close()
    reader, writer = await served.connect()
    writer.write(b"GET /fast HTTP/1.1\r\nX: " + b"a" * 20_000)  # longer than any head aiohttp would take
    head = await reader.readuntil(b"\r\n\r\n")
    assert int(head.split()[1]) == 431
    writer.close()
    assert await request(served, "/boom") == (500, {"error": "internal_error",
                                                    "detail": "the node failed to answer this request; its log says why"})
    assert [kind for kind, _ in served.reports].count("bad_request") == 2
    assert "internal_error" in [kind for kind, _ in served.reports]

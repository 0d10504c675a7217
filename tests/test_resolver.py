"""PolicyResolver: host names are checked against peer_allow on resolution, over real loopback sockets."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

from gossipd.addresses import PeerPolicy
from gossipd.daemon.resolver import PolicyResolver

TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.fixture
async def local_server():
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1], hits
    finally:
        await runner.cleanup()


async def fetch(policy: PeerPolicy, url: str) -> int:
    connector = aiohttp.TCPConnector(resolver=PolicyResolver(policy), family=socket.AF_INET)  # the server is IPv4
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session:
        async with session.get(url) as resp:
            return resp.status


async def test_allowed_name_connects(local_server):
    port, hits = local_server
    assert await fetch(PeerPolicy(), f"http://localhost:{port}/") == 200
    assert hits == ["/"]


async def test_refused_name_never_connects(local_server):
    port, hits = local_server
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await fetch(PeerPolicy.from_cidrs(["10.0.0.0/8"]), f"http://localhost:{port}/")
    assert "not in peer_allow" in str(info.value.os_error)  # the reason reaches the caller
    assert hits == []

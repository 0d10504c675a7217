"""TLS contexts against a throw-away CA, over real sockets on 127.0.0.1 (aiohttp server and client)."""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))

from certs import Authority, Issued, make_ca  # noqa: E402

from gossipd.daemon.tls import TLSError, client_context, server_context  # noqa: E402

TIMEOUT = aiohttp.ClientTimeout(total=10)


class Pki:
    def __init__(self, base: Path) -> None:
        self.ca: Authority = make_ca(base / "ca")
        self.server: Issued = self.ca.issue(base / "ca", "server")
        self.client: Issued = self.ca.issue(base / "ca", "client")
        self.rogue_ca: Authority = make_ca(base / "rogue", "rogue-ca")
        self.rogue_client: Issued = self.rogue_ca.issue(base / "rogue", "rogue-client")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


async def serve(ctx: ssl.SSLContext) -> AsyncIterator[str]:
    async def ping(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in peer["subject"])["commonName"] if peer else ""
        return web.json_response({"pong": True, "client": subject})

    app = web.Application()
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[str]:
    async for url in serve(server_context(pki.server.cert, pki.server.key)):
        yield url


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[str]:
    async for url in serve(server_context(pki.server.cert, pki.server.key, ca=pki.ca.cert, require_client_cert=True)):
        yield url


async def get(url: str, ctx: ssl.SSLContext) -> dict:
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        async with session.get(url + "/ping") as resp:
            assert resp.status == 200
            return await resp.json()


async def test_verification_succeeds_with_the_cluster_ca(server: str, pki: Pki):
    assert (await get(server, client_context(ca=pki.ca.cert)))["pong"] is True


async def test_verification_fails_without_the_ca(server: str, pki: Pki):
    for ctx in (client_context(), client_context(ca=pki.rogue_ca.cert)):  # system roots; another CA
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(server, ctx)


async def test_host_name_is_checked(server: str, pki: Pki):
    other = pki.ca.issue(pki.ca.cert.parent, "elsewhere", hosts=("10.9.9.9",))
    async for url in serve(server_context(other.cert, other.key)):
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(url, client_context(ca=pki.ca.cert))


async def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_server: str, pki: Pki):
    with pytest.raises(aiohttp.ClientError):
        await get(mtls_server, client_context(ca=pki.ca.cert))


async def test_mutual_tls_refuses_a_certificate_from_another_ca(mtls_server: str, pki: Pki):
    with pytest.raises(aiohttp.ClientError):
        await get(mtls_server, client_context(ca=pki.ca.cert, cert=pki.rogue_client.cert, key=pki.rogue_client.key))


async def test_mutual_tls_accepts_a_member(mtls_server: str, pki: Pki):
    answer = await get(mtls_server, client_context(ca=pki.ca.cert, cert=pki.client.cert, key=pki.client.key))
    assert answer == {"pong": True, "client": "client"}


def test_setting_errors_name_the_setting_and_file(pki: Pki, tmp_path: Path):
    with pytest.raises(TLSError, match=r"^tls.cert: no such file .*nope.crt"):
        server_context(tmp_path / "nope.crt", pki.server.key)
    with pytest.raises(TLSError, match=r"^tls.key: no such file"):
        server_context(pki.server.cert, tmp_path / "nope.key")
    with pytest.raises(TLSError, match=r"^tls.cert/tls.key: cannot use"):
        server_context(pki.server.cert, pki.client.key)  # a key that does not match
    with pytest.raises(TLSError, match=r"^tls.require_client_cert: needs tls.ca"):
        server_context(pki.server.cert, pki.server.key, require_client_cert=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TLSError, match=r"^tls.ca: .*garbage.pem holds no usable"):
        client_context(ca=garbage)
    with pytest.raises(TLSError, match=r"^tls.ca: no such file"):
        client_context(ca=tmp_path / "none.pem")
    with pytest.raises(TLSError, match="both or neither"):
        client_context(ca=pki.ca.cert, cert=pki.client.cert)


def test_contexts_refuse_old_protocols(pki: Pki):
    for ctx in (server_context(pki.server.cert, pki.server.key), client_context(ca=pki.ca.cert)):
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client_context().check_hostname and client_context().verify_mode == ssl.CERT_REQUIRED

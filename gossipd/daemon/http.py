"""The daemon's HTTP API (aiohttp server routes) and its peer client.

The routes know nothing of the driver: they talk to a :class:`NodeService`,
a small protocol that ``gossipd.daemon.driver.Daemon`` implements (and that a
test can implement with a fake). Every error answer is JSON:
``{"error": code, "detail": sentence}``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from gossipd import wire
from gossipd.core.messages import Message, ModelMessage, ShuffleRequest
from gossipd.daemon.config import ConfigError, check_peer_url
from gossipd.daemon.reasons import describe_exception
from gossipd.logsummary import LogSummary

log = logging.getLogger(__name__)

MSGPACK = "application/msgpack"


class NodeService(Protocol):
    """What the HTTP API needs from the node it serves."""

    #: largest request body read from a peer (bytes)
    max_body: int

    def is_starting(self) -> bool:
        """True until the node exists (the socket is bound before the model is loaded)."""

    def decode(self, body: bytes) -> Message:
        """A peer message checked against this node (cluster, architecture, size); WireError otherwise."""

    def count_rejected(self, code: str) -> None:
        """A peer message was refused with ``code``."""

    def busy_reason(self) -> str | None:
        """Why a model cannot be taken now (e.g. a full queue), or None."""

    async def apply_model(self, msg: ModelMessage) -> float:
        """Merge and train on ``msg``; the new model age."""

    def answer_shuffle(self, msg: ShuffleRequest) -> bytes:
        """The encoded shuffle reply."""

    def status(self) -> dict[str, Any]: ...

    def peers_report(self) -> dict[str, Any]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) for /readyz."""

    def metrics_text(self) -> bytes:
        """Prometheus text exposition."""

    def model_msgpack(self) -> bytes: ...

    def model_onnx(self) -> tuple[bytes, str]:
        """(ONNX bytes, file name); blocking, run in an executor."""

    def admin_denied(self, remote: str | None) -> str | None:
        """Why ``remote`` may not call admin endpoints, or None if it may."""

    def own_address(self) -> str: ...

    def join(self, url: str) -> dict[str, Any]:
        """Admin join of ``url``; the JSON answer."""


def json_error(status: int, code: str, detail: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "detail": detail, **extra}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413 ...) as JSON bodies too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_") if exc.reason else "http_error"
        return json_error(exc.status, code, f"{request.method} {request.path}: {exc.reason}")


class Api:
    """Route handlers; all state lives behind the NodeService."""

    def __init__(self, service: NodeService) -> None:
        self.s = service
        # One line per sender, path and reason at once, then a count at most once a minute:
        # one WARNING per refused message let a hostile sender grow the log by 50 MB in 30 s.
        self.rejections = LogSummary(log, "rejected")

    @web.middleware
    async def starting(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The socket is bound before the model is loaded: 503 until then, except for
        the liveness probe (the process is up and serving HTTP)."""
        if self.s.is_starting() and request.path != "/healthz":
            return json_error(503, "starting", "the node is still starting; try again in a moment")
        return await handler(request)

    def app(self) -> web.Application:
        # Peer bodies are read by _body against the node's own limit, known once the model is.
        app = web.Application(middlewares=[json_errors, self.starting])
        app.add_routes([
            web.post("/v1/gossip/model", self.post_model),
            web.post("/v1/gossip/shuffle", self.post_shuffle),
            web.get("/v1/status", self.get_status),
            web.get("/v1/peers", self.get_peers),
            web.post("/v1/admin/join", self.post_join),
            web.get("/v1/model", self.get_model),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics),
        ])
        return app

    async def _body(self, request: web.Request) -> bytes:
        """The request body within the size limit, else a WireError(413)."""
        limit = self.s.max_body
        if request.content_length is not None and request.content_length > limit:
            raise wire.WireError(413, "too_large", f"body of {request.content_length} bytes exceeds the limit of {limit}")
        body = bytearray()
        async for chunk in request.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > limit:  # a chunked body has no length to check up front
                raise wire.WireError(413, "too_large", f"body exceeds the limit of {limit} bytes")
        return bytes(body)

    async def _decode(self, request: web.Request, expected: type[Any]) -> Any:
        """The posted message if it decodes and is of the type this endpoint takes."""
        msg = self.s.decode(await self._body(request))
        if not isinstance(msg, expected):
            raise wire.WireError(400, "wrong_endpoint", f"a {type(msg).__name__} was posted to {request.path}")
        return msg

    def _reject(self, request: web.Request, err: wire.WireError) -> web.Response:
        self.s.count_rejected(err.code)
        self.rejections.record((request.remote, request.path, err.code),
                               f"{request.method} {request.path} from {request.remote}: {err.code}", err.detail)
        return web.json_response(err.to_json(), status=err.status)

    # -- peer traffic -----------------------------------------------------

    async def post_model(self, request: web.Request) -> web.Response:
        try:
            msg = await self._decode(request, ModelMessage)
        except wire.WireError as err:
            return self._reject(request, err)
        busy = self.s.busy_reason()
        if busy is not None:
            return json_error(503, "busy", busy)
        age = await self.s.apply_model(msg)
        return web.json_response({"merged": True, "age": age})

    async def post_shuffle(self, request: web.Request) -> web.Response:
        try:
            msg = await self._decode(request, ShuffleRequest)
        except wire.WireError as err:
            return self._reject(request, err)
        return web.Response(body=self.s.answer_shuffle(msg), content_type=MSGPACK)

    # -- inspection -------------------------------------------------------

    async def get_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.s.status())

    async def get_peers(self, request: web.Request) -> web.Response:
        return web.json_response(self.s.peers_report())

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "starting" if self.s.is_starting() else "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, details = self.s.readiness()
        return web.json_response({"ready": ready, **details}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.s.metrics_text(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def get_model(self, request: web.Request) -> web.Response:
        fmt = request.query.get("format", "msgpack")
        if fmt == "msgpack":
            return web.Response(body=self.s.model_msgpack(), content_type=MSGPACK)
        if fmt == "onnx":
            data, filename = await asyncio.get_running_loop().run_in_executor(None, self.s.model_onnx)
            return web.Response(body=data, content_type="application/octet-stream", headers={
                "Content-Disposition": f'attachment; filename="{filename}"'})
        return json_error(400, "bad_format", f"format must be onnx or msgpack, got {fmt!r}")

    # -- admin ------------------------------------------------------------

    async def post_join(self, request: web.Request) -> web.Response:
        denied = self.s.admin_denied(request.remote)
        if denied is not None:
            return json_error(403, "forbidden", denied)
        try:
            payload = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            return json_error(400, "bad_json", "body must be JSON like {\"peer\": \"http://HOST:PORT\"}")
        if not isinstance(payload, dict) or not isinstance(payload.get("peer"), str):
            return json_error(400, "missing_field", "body must be JSON like {\"peer\": \"http://HOST:PORT\"}")
        try:
            url = check_peer_url(payload["peer"], "peer")
        except ConfigError as exc:
            return json_error(400, "bad_peer", str(exc))
        if url == self.s.own_address():
            return json_error(400, "bad_peer", "peer: that is this node's own address")
        return web.json_response(self.s.join(url))


class PeerClient:
    """Sends messages to peers over HTTP; failures come back as ``PeerError``."""

    def __init__(self, timeout: float, max_body: int) -> None:
        self.max_body = max_body
        self.timeout = timeout
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=32),
            headers={"Content-Type": MSGPACK},
        )

    async def close(self) -> None:
        await self._session.close()

    async def post(self, peer: str, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            async with self._session.post(peer + path, data=body) as resp:
                return resp.status, await resp.content.read(self.max_body + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise PeerError(peer, describe_exception(exc, self.timeout)) from None


class PeerError(Exception):
    """The peer could not be reached or did not answer in time; ``reason`` says how."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"{peer}: {reason}")
        self.peer = peer
        self.reason = reason


def ip_allowed(remote: str | None, allow: tuple[str, ...]) -> bool:
    if "*" in allow:
        return True
    if remote is None:
        return False
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return False
    for entry in allow:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False

"""The daemon's HTTP API (aiohttp server routes) and its peer client.

The routes know nothing of the driver: they talk to a :class:`NodeService`,
a small protocol that ``gossipd.daemon.driver.Daemon`` implements (and that a
test can implement with a fake). Every error answer is JSON:
``{"error": code, "detail": sentence}``.

What a browser or a stranger can do is limited here (``docs/security.md``):
peer endpoints take only msgpack bodies (415 otherwise), admin endpoints only
JSON (``/v1/data`` msgpack too), and none of these is a simple request a
cross-site page can send; no endpoint answers a CORS preflight with
permission; ``/v1/admin/*``, ``/v1/model``, ``/v1/data`` and ``/v1/predict``
need the client's IP in ``admin_allow`` *and* the bearer token; bodies are
read within a size limit and a timeout.

Peer messages are handed, as bytes, to the service's ``peer_message`` (the
same handler the in-memory transport calls); :class:`HttpTransport` is the
sending side, with the outcome of every failure mapped by
``gossipd.daemon.transport``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
import msgpack
from aiohttp import web

from gossipd import wire
from gossipd.addresses import AddressError, PeerPolicy
from gossipd.data import DataError
from gossipd.daemon.reasons import describe_exception
from gossipd.daemon.resolver import PolicyResolver
from gossipd.daemon.transport import MODEL_PATH, MSGPACK, SHUFFLE_PATH, Answer, PeerHandler, SendFailed, outcome_of_error
from peer_sampling.outcome import Outcome

log = logging.getLogger(__name__)
#: Accepted on peer endpoints: MSGPACK, and the type daemons before 0.3 sent.
MSGPACK_TYPES = frozenset({MSGPACK, "application/msgpack"})
#: Largest admin request body (a join is a few dozen bytes of JSON).
MAX_ADMIN_BODY = 4096
#: Largest body of rows (POST /v1/data, /v1/predict): 10,000 rows of a few dozen features as JSON.
MAX_ROWS_BODY = 16 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotExportable(Exception):
    """The model cannot be exported now; the message says why (409, never 500)."""


class NodeService(Protocol):
    """What the HTTP API needs from the node it serves."""

    #: largest request body read from a peer (bytes)
    max_body: int
    #: seconds a client has to send a body once its headers are in
    body_timeout: float

    def is_starting(self) -> bool:
        """True until the node exists (the socket is bound before the model is loaded)."""

    #: a peer message's body -> the answer (``gossipd.daemon.transport.PeerHandler``)
    peer_message: PeerHandler

    def refuse_early(self, path: str) -> Answer | None:
        """The answer to a peer message to ``path`` that needs no body (starting, full), or None."""

    def reject(self, remote: str | None, path: str, err: wire.WireError) -> None:
        """A peer message was refused before it reached ``peer_message`` (type, size, time): count, log."""

    def status(self) -> dict[str, Any]: ...

    def peers_report(self) -> dict[str, Any]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) for /readyz."""

    def metrics_text(self) -> bytes:
        """Prometheus text exposition."""

    def model_msgpack(self) -> bytes: ...

    def model_onnx(self) -> tuple[bytes, str]:
        """(ONNX bytes, file name); blocking, run in an executor. NotExportable if it cannot be."""

    def admin_denied(self, remote: str | None) -> str | None:
        """Why ``remote`` may not call admin endpoints, or None if it may."""

    def admin_token(self) -> str:
        """The bearer token admin endpoints require (may change on reload)."""

    def own_address(self) -> str: ...

    def check_peer(self, url: str) -> str:
        """``url`` if this node may connect to it (syntax and peer_allow); AddressError otherwise."""

    def join(self, url: str) -> dict[str, Any]:
        """Admin join of ``url``; the JSON answer."""

    async def add_rows(self, doc: Any) -> dict[str, Any]:
        """Rows ``{"rows": [...], "labels": [...]}`` into the local data, trained on; the JSON
        answer. DataError (a 400) names what is wrong; nothing is added then."""

    def predict(self, doc: Any) -> dict[str, Any]:
        """The current model's answer for ``{"rows": [...]}``; DataError (a 400). Blocking:
        run in an executor."""


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


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison: the answer's timing says nothing about how much of a guess was right."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


@web.middleware
async def no_cross_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A CORS preflight never gets permission, so a page in a browser cannot send what needs one
    (a msgpack body, an Authorization header) to any endpoint."""
    if request.method == "OPTIONS":
        return json_error(403, "cross_origin_refused",
                          "this API does not serve pages from other origins (no CORS)")
    return await handler(request)


def _error_response(err: wire.WireError) -> web.Response:
    resp = web.json_response(err.to_json(), status=err.status)
    if err.status in (408, 413):
        resp.force_close()  # the rest of the body is still on its way: not worth reading
    return resp


def _response(answer: Answer, *, close: bool = False) -> web.Response:
    resp = web.Response(status=answer.status, body=answer.body, content_type=answer.content_type,
                        headers=answer.http_headers())
    if close:
        resp.force_close()
    return resp


class Api:
    """Route handlers; all state lives behind the NodeService."""

    #: Routes anyone may call; every other one is locked (test_daemon_security checks the route table).
    PUBLIC = frozenset({"/v1/gossip/model", "/v1/gossip/shuffle", "/v1/status", "/v1/peers", "/healthz",
                        "/readyz", "/metrics"})

    def __init__(self, service: NodeService) -> None:
        self.s = service

    @web.middleware
    async def starting(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The socket is bound before the model is loaded: 503 until then, except for
        the liveness probe (the process is up and serving HTTP)."""
        if self.s.is_starting() and request.path != "/healthz":
            return json_error(503, "starting", "the node is still starting; try again in a moment")
        return await handler(request)

    def app(self, middlewares: tuple[Any, ...] = ()) -> web.Application:
        """The application; ``middlewares`` go first (the connection guard's request tracking).

        Peer bodies are read by ``_read`` against the node's own limit, known once the model is."""
        app = web.Application(middlewares=[*middlewares, json_errors, no_cross_origin, self.starting])
        app.add_routes([
            web.post(MODEL_PATH, self.post_peer),
            web.post(SHUFFLE_PATH, self.post_peer),
            web.get("/v1/status", self.get_status),
            web.get("/v1/peers", self.get_peers),
            web.post("/v1/admin/join", self.locked(self.post_join)),
            web.get("/v1/model", self.locked(self.get_model)),
            web.post("/v1/data", self.locked(self.post_data)),
            web.post("/v1/predict", self.locked(self.post_predict)),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics),
        ])
        return app

    def locked(self, handler: Handler) -> Handler:
        """``handler`` behind the admin allow-list (403) and the bearer token (401)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            denied = self.s.admin_denied(request.remote)
            if denied is not None:
                return json_error(403, "forbidden", denied)
            presented = bearer_token(request)
            if not token_matches(presented, self.s.admin_token()):
                code = "token_required" if presented is None else "bad_token"
                detail = ("send the admin token as 'Authorization: Bearer TOKEN' (it is in the node's "
                          "admin_token_file, by default STATE_DIR/admin-token; gossip join and gossip export "
                          "take --token-file FILE or $GOSSIP_ADMIN_TOKEN)")
                resp = json_error(401, code, ("no admin token: " if presented is None else "wrong admin token: ")
                                  + detail)
                resp.headers["WWW-Authenticate"] = 'Bearer realm="gossipd admin"'
                return resp
            return await handler(request)

        guarded.locked = True  # type: ignore[attr-defined]
        return guarded

    async def _read(self, request: web.Request, limit: int) -> bytes:
        """The request body within ``limit`` bytes (413) and the body timeout (408): WireError otherwise."""
        if request.content_length is not None and request.content_length > limit:
            raise wire.WireError(413, "too_large", f"body of {request.content_length} bytes exceeds the limit of {limit}")
        timeout = self.s.body_timeout
        body = bytearray()
        try:
            async with asyncio.timeout(timeout):
                async for chunk in request.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > limit:  # a chunked body has no length to check up front
                        raise wire.WireError(413, "too_large", f"body exceeds the limit of {limit} bytes")
        except TimeoutError:
            raise wire.WireError(408, "body_timeout", f"the body did not arrive within {timeout:g} s") from None
        return bytes(body)

    # -- peer traffic -----------------------------------------------------

    async def post_peer(self, request: web.Request) -> web.StreamResponse:
        """A model or a shuffle request: msgpack only (415), within the size and time limits
        (413, 408); the service does the rest (``NodeService.peer_message``)."""
        try:
            if request.content_type not in MSGPACK_TYPES:
                raise wire.WireError(415, "unsupported_media_type",
                                     f"peer messages are Content-Type: {MSGPACK}, got {request.content_type!r}")
            early = self.s.refuse_early(request.path)
            if early is not None:  # the body stays unread: the connection closes after the answer
                return _response(early, close=True)
            body = await self._read(request, self.s.max_body)
        except wire.WireError as err:
            self.s.reject(request.remote, request.path, err)
            return _error_response(err)
        answer = await self.s.peer_message(request.path, body, request.remote,
                                           respond_async=prefers_async(request))
        return _response(answer)

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
            try:
                data, filename = await asyncio.get_running_loop().run_in_executor(None, self.s.model_onnx)
            except NotExportable as exc:
                return json_error(409, "not_exportable", f"the model cannot be exported now: {exc}")
            return web.Response(body=data, content_type="application/octet-stream", headers={
                "Content-Disposition": f'attachment; filename="{filename}"'})
        return json_error(400, "bad_format", f"format must be onnx or msgpack, got {fmt!r}")

    # -- admin ------------------------------------------------------------

    async def post_join(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return json_error(415, "unsupported_media_type",
                              f"admin requests are Content-Type: application/json, got {request.content_type!r}")
        try:
            payload = json.loads(await self._read(request, MAX_ADMIN_BODY) or b"null")
        except wire.WireError as err:
            return _error_response(err)
        except (ValueError, UnicodeDecodeError):
            return json_error(400, "bad_json", "body must be JSON like {\"peer\": \"http://HOST:PORT\"}")
        if not isinstance(payload, dict) or not isinstance(payload.get("peer"), str):
            return json_error(400, "missing_field", "body must be JSON like {\"peer\": \"http://HOST:PORT\"}")
        try:
            url = self.s.check_peer(payload["peer"])
        except AddressError as exc:
            return json_error(400, "bad_peer", f"peer: {exc}")
        if url == self.s.own_address():
            return json_error(400, "bad_peer", "peer: that is this node's own address")
        return web.json_response(self.s.join(url))

    async def _rows_doc(self, request: web.Request, *, msgpack_ok: bool) -> Any:
        """A JSON (or, where ``msgpack_ok``, msgpack) body of rows, decoded; WireError otherwise."""
        kinds = ("application/json", *(sorted(MSGPACK_TYPES) if msgpack_ok else ()))
        if request.content_type not in kinds:
            raise wire.WireError(415, "unsupported_media_type",
                                 f"{request.path} takes Content-Type: {' or '.join(kinds)}, got {request.content_type!r}")
        body = await self._read(request, MAX_ROWS_BODY)
        try:
            if request.content_type == "application/json":
                return json.loads(body)
            return msgpack.unpackb(body, raw=False, strict_map_key=True)
        except (ValueError, TypeError, UnicodeDecodeError):  # msgpack's errors are ValueErrors
            raise wire.WireError(400, "bad_body", f"the body is not valid {request.content_type.split('/')[-1]}: "
                                                  'expected {"rows": [[feature, ...], ...]}') from None

    async def post_data(self, request: web.Request) -> web.Response:
        """Admin: examples for the local data (trained on at once)."""
        try:
            doc = await self._rows_doc(request, msgpack_ok=True)
            return web.json_response(await self.s.add_rows(doc))
        except wire.WireError as err:
            return _error_response(err)
        except DataError as exc:
            return json_error(400, "bad_rows", str(exc))

    async def post_predict(self, request: web.Request) -> web.Response:
        """Admin: the current model's labels and probabilities (or values) for raw rows."""
        try:
            doc = await self._rows_doc(request, msgpack_ok=False)
            answer = await asyncio.get_running_loop().run_in_executor(None, self.s.predict, doc)
        except wire.WireError as err:
            return _error_response(err)
        except DataError as exc:
            return json_error(400, "bad_rows", str(exc))
        return web.json_response(answer)


def prefers_async(request: web.Request) -> bool:
    """The client sent ``Prefer: respond-async`` (RFC 7240): it takes ``202`` for a queued model.
    Every gossipd since backpressure does; older ones wait for the merge and get ``200``."""
    return any(p.split(";")[0].strip().lower() == "respond-async"
               for value in request.headers.getall("Prefer", ()) for p in value.split(","))


class HttpTransport:
    """Sends messages to peers over HTTP(S) (implements ``Transport``); every failure comes back
    as ``SendFailed`` with its outcome (``transport.outcome_of_error``).

    Connects only where ``policy`` allows: literal IPs are checked before each
    request (aiohttp does not resolve them), host names by the connector's
    resolver against the IPs they resolve to. Redirects are never followed
    (a 3xx is an answer that refuses: following one could lead past that
    check). ``ssl_context`` verifies ``https://`` peers (and presents this
    node's certificate for mutual TLS).
    """

    def __init__(self, timeout: float, max_body: int, policy: PeerPolicy | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_body = max_body
        self.timeout = timeout
        self.policy = policy or PeerPolicy()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=32, resolver=PolicyResolver(self.policy),
                                           ssl=ssl_context if ssl_context is not None else True),
            headers={"Content-Type": MSGPACK, "Prefer": "respond-async"},
        )

    async def listen(self, handler: PeerHandler) -> None:
        return None  # the daemon's HTTP server (Api) serves peer messages

    async def close(self) -> None:
        await self._session.close()

    async def post(self, peer: str, path: str, body: bytes | bytearray) -> Answer:
        try:
            self.policy.check(peer)
        except AddressError as exc:
            raise SendFailed(Outcome.REFUSED, f"not contacted: {exc}") from None
        try:
            async with self._session.post(peer + path, data=body, allow_redirects=False) as resp:
                data = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > self.max_body:  # more than any reply we could use: decoding refuses it
                        break
                return Answer(resp.status, bytes(data), resp.content_type, retry_after(resp.headers))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ssl.SSLError) as exc:
            raise SendFailed(outcome_of_error(exc), describe_exception(exc, self.timeout)) from None


def retry_after(headers: Any) -> float | None:
    """``Retry-After`` in seconds, when given as a number (an HTTP date is not worth parsing here)."""
    try:
        value = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


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

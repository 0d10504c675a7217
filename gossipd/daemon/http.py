"""The daemon's HTTP API (aiohttp server routes) and its peer client.

Every error answer is JSON: ``{"error": code, "detail": sentence}``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gossipd import wire
from gossipd.daemon.config import ConfigError, check_peer_url
from gossipd.core.messages import ModelMessage, ShuffleReply, ShuffleRequest

if TYPE_CHECKING:
    from gossipd.daemon.driver import Daemon

log = logging.getLogger(__name__)

MSGPACK = "application/msgpack"


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
    """Route handlers; all state lives in the Daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    @web.middleware
    async def starting(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The socket is bound before the node exists (its URL needs the port): 503 until then."""
        if self.d.node is None:
            return json_error(503, "starting", "the node is still starting; try again in a moment")
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.d.max_body, middlewares=[json_errors, self.starting])
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
        limit = self.d.max_body
        if request.content_length is not None and request.content_length > limit:
            raise wire.WireError(413, "too_large", f"body of {request.content_length} bytes exceeds the limit of {limit}")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise wire.WireError(413, "too_large", f"body exceeds the limit of {limit} bytes") from None

    async def _decode(self, request: web.Request, expected: type[Any]) -> Any:
        """The posted message if it decodes and is of the type this endpoint takes."""
        body = await self._body(request)
        msg = wire.decode(body, cluster=self.d.config.cluster, expected_arch=self.d.learner.fingerprint,
                          expected_params=self.d.learner.n_params, max_bytes=self.d.max_body)
        if not isinstance(msg, expected):
            raise wire.WireError(400, "wrong_endpoint", f"a {type(msg).__name__} was posted to {request.path}")
        return msg

    def _reject(self, request: web.Request, err: wire.WireError) -> web.Response:
        self.d.node.counters.rejected += 1
        log.warning("rejected %s from %s: %s (%s)", request.path, request.remote, err.code, err.detail)
        return web.json_response(err.to_json(), status=err.status)

    # -- peer traffic -----------------------------------------------------

    async def post_model(self, request: web.Request) -> web.Response:
        try:
            msg = await self._decode(request, ModelMessage)
        except wire.WireError as err:
            return self._reject(request, err)
        if self.d.pending >= self.d.config.max_pending:
            return json_error(503, "busy", f"{self.d.pending} models already wait for training; try later")
        state = await self.d.apply_model(msg)
        return web.json_response({"merged": True, "age": state.age})

    async def post_shuffle(self, request: web.Request) -> web.Response:
        try:
            msg = await self._decode(request, ShuffleRequest)
        except wire.WireError as err:
            return self._reject(request, err)
        reply = self.d.node.on_shuffle_request(self.d.now(), msg) or ShuffleReply(self.d.address, ())
        return web.Response(body=wire.encode(reply, cluster=self.d.config.cluster), content_type=MSGPACK)

    # -- inspection -------------------------------------------------------

    async def get_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.d.status())

    async def get_peers(self, request: web.Request) -> web.Response:
        return web.json_response({"node_id": self.d.node_id, "advertise": self.d.address,
                                  "peers": self.d.peer_entries(), "seeds": self.d.seeds()})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        peers = len(self.d.node.sampler.peers())
        ready = self.d.node.state is not None and peers > 0
        return web.json_response({"ready": ready, "model_loaded": self.d.node.state is not None, "peers": peers},
                                 status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.d.metrics_registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def get_model(self, request: web.Request) -> web.Response:
        fmt = request.query.get("format", "msgpack")
        state = self.d.node.state
        if fmt == "msgpack":
            msg = ModelMessage(self.d.address, self.d.learner.fingerprint, state.age, state.params)
            return web.Response(body=wire.encode(msg, cluster=self.d.config.cluster), content_type=MSGPACK)
        if fmt == "onnx":
            data = await asyncio.get_running_loop().run_in_executor(None, self.d.export_onnx_bytes, state)
            return web.Response(body=data, content_type="application/octet-stream", headers={
                "Content-Disposition": f'attachment; filename="gossipd-{self.d.node_id}.onnx"'})
        return json_error(400, "bad_format", f"format must be onnx or msgpack, got {fmt!r}")

    # -- admin ------------------------------------------------------------

    async def post_join(self, request: web.Request) -> web.Response:
        if not self.d.admin_allowed(request.remote):
            return json_error(403, "forbidden", f"admin calls are not allowed from {request.remote} "
                                                f"(admin_allow: {', '.join(self.d.config.admin_allow)})")
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
        if url == self.d.address:
            return json_error(400, "bad_peer", "peer: that is this node's own address")
        self.d.join(url)
        return web.json_response({"joined": url, "peers": len(self.d.node.sampler.peers())})


class PeerClient:
    """Sends messages to peers over HTTP; failures come back as ``PeerError``."""

    def __init__(self, cluster: str, timeout: float, max_body: int) -> None:
        self.cluster = cluster
        self.max_body = max_body
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
            raise PeerError(f"{peer}: {type(exc).__name__}: {exc}") from None


class PeerError(Exception):
    """The peer could not be reached or did not answer in time."""


class DaemonCollector:
    """Prometheus metrics read from the daemon at scrape time (no double bookkeeping)."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def collect(self) -> Any:
        node = self.d.node
        counters = node.counters.as_dict()
        for name, help_text in (("sent", "models pushed to peers"), ("received", "models received and accepted"),
                                ("merged", "models merged and trained on"),
                                ("rejected", "messages rejected as malformed or foreign"),
                                ("send_failures", "messages that did not reach their peer")):
            c = CounterMetricFamily(f"gossipd_{name}", help_text)
            c.add_metric([], counters[name])
            yield c
        state = node.state
        for name, help_text, value in (
            ("gossipd_model_age", "examples the local model has seen (merges take the max)", state.age),
            ("gossipd_model_params", "parameters in the model", state.size),
            ("gossipd_peers", "entries in the peer-sampling view", len(node.sampler.peers())),
            ("gossipd_pending_updates", "received models waiting for the trainer", self.d.pending),
            ("gossipd_uptime_seconds", "seconds since start", time.monotonic() - self.d.started),
        ):
            g = GaugeMetricFamily(name, help_text)
            g.add_metric([], value)
            yield g
        acc = self.d.evaluation.get("accuracy")
        if acc is not None:
            g = GaugeMetricFamily("gossipd_accuracy", "accuracy on this node's held-out test share")
            g.add_metric([], acc)
            yield g


def make_registry(daemon: Daemon) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    return registry


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

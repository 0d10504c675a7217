"""A thin asyncio client of the daemon's HTTP API (``docs/protocol.md``).

Every failure becomes one exception whose message is the single line the CLI
prints: the URL could not be reached, is not a gossipd, speaks another protocol
version, or the daemon refused the request (its own JSON ``detail``).

    async with Client(timeout=3) as c:
        status = await c.status("http://127.0.0.1:7070")
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cli.errors import UserError

if TYPE_CHECKING:
    import aiohttp

# aiohttp and gossipd.wire (numpy, msgpack) are imported when a request is made,
# not when the CLI starts: `gossip status --help` should not wait for them.

#: The admin token, when --token-file is not given.
TOKEN_ENV = "GOSSIP_ADMIN_TOKEN"

# Fields every gossipd /v1/status answer carries; their absence means "not a gossipd".
STATUS_FIELDS = ("node_id", "protocol", "advertise", "model", "counters")
PEERS_FIELDS = ("node_id", "peers")


class NetworkError(UserError):
    """The node could not be reached or did not answer as a gossipd does (exit code 1)."""

    exit_code = 1


class Unreachable(NetworkError):
    """Connection refused, unknown host, timeout, reset."""


class NotGossipd(NetworkError):
    """Something answered, but not a gossipd daemon."""


class ProtocolMismatch(NetworkError):
    """A gossipd speaking a protocol version this CLI does not."""


class DaemonError(UserError):
    """The daemon answered with a JSON error (``{"error": code, "detail": ...}``).

    Exit code 2 for a 4xx (the request was wrong or not allowed), 1 otherwise.
    """

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.exit_code = 2 if 400 <= status < 500 else 1


class CommandFailed(UserError):
    """A command could not do its work for a reason other than bad input (exit code 1)."""

    exit_code = 1


def check_url(url: str, what: str = "URL") -> str:
    """``url`` if it looks like http(s)://HOST[:PORT] (trailing slash removed), else UserError (exit 2)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        hint = f"; did you mean http://{url}?" if "://" not in url and url else ""
        raise UserError(f"{what}: expected an http(s)://HOST:PORT URL, got {url!r}{hint}")
    if not parts.hostname:
        raise UserError(f"{what}: no host in {url!r}; expected http(s)://HOST:PORT")
    try:
        parts.port
    except ValueError:
        raise UserError(f"{what}: bad port in {url!r}; expected http(s)://HOST:PORT") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UserError(f"{what}: expected the node's base URL http(s)://HOST:PORT, got {url!r}")
    return url.rstrip("/")


def admin_token(token_file: Path | None) -> str | None:
    """The admin token from ``--token-file`` (UserError naming it if unreadable), else $GOSSIP_ADMIN_TOKEN."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"--token-file: cannot read {token_file} "
                            f"({getattr(exc, 'strerror', None) or exc})") from None
        if not token:
            raise UserError(f"--token-file: {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Client:
    """aiohttp session with a per-request timeout; use as ``async with``."""

    def __init__(self, timeout: float = 5.0, *, limit: int = 64, max_bytes: int = 64 << 20,
                 token: str | None = None) -> None:
        if not timeout > 0:
            raise UserError(f"--timeout: must be > 0, got {timeout!r}")
        self.timeout = float(timeout)
        self.token = token  # sent to admin endpoints only, never to nodes a crawl discovers
        self.max_bytes = max_bytes
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        import aiohttp

        from gossipd.wire import PROTOCOL_VERSION

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self._limit),
            headers={"User-Agent": f"gossip-cli (protocol {PROTOCOL_VERSION})", "Accept": "application/json"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- raw requests ------------------------------------------------------------

    async def request(self, method: str, url: str, path: str, *, json_body: Any = None,
                      admin: bool = False) -> tuple[int, str, bytes]:
        """(status, content type, body) of one request, or Unreachable; ``admin`` sends the token."""
        assert self._session is not None, "use Client as 'async with'"
        import aiohttp

        headers = {"Authorization": f"Bearer {self.token}"} if admin and self.token else None
        try:
            async with self._session.request(method, url + path, json=json_body, allow_redirects=False,
                                             headers=headers) as resp:
                body = await resp.content.read(self.max_bytes + 1)
                if len(body) > self.max_bytes:
                    raise NotGossipd(f"{url} is not a gossipd node ({method} {path} answered more than "
                                     f"{self.max_bytes} bytes)")
                return resp.status, resp.content_type, body
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            if isinstance(exc, UserError):
                raise
            from gossipd.daemon.reasons import describe_exception

            raise Unreachable(f"cannot reach {url}: {describe_exception(exc, self.timeout)}") from None

    async def request_json(self, method: str, url: str, path: str, *, json_body: Any = None,
                           ok: Iterable[int] = (200,), admin: bool = False) -> Any:
        """The JSON answer of a gossipd; NotGossipd if it is not JSON, DaemonError on a JSON error."""
        status, ctype, body = await self.request(method, url, path, json_body=json_body, admin=admin)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            what = f"{ctype or 'no content type'}" + (f", {len(body)} bytes" if body else ", empty body")
            raise NotGossipd(f"{url} is not a gossipd node ({method} {path} answered HTTP {status} "
                             f"with {what}, not JSON)") from None
        if status in ok:
            return data
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            raise _refused(url, f"{method} {path}", status, data)
        raise NotGossipd(f"{url} is not a gossipd node ({method} {path} answered HTTP {status} "
                         f"with JSON that is not a gossipd error)")

    # -- the API -----------------------------------------------------------------

    async def status(self, url: str) -> dict[str, Any]:
        """GET /v1/status, checked to come from a gossipd speaking our protocol."""
        try:
            data = await self.request_json("GET", url, "/v1/status")
        except DaemonError as exc:  # e.g. a JSON API that is not ours answering 404
            if exc.code == "starting":
                raise
            raise NotGossipd(f"{url} is not a gossipd node (GET /v1/status answered HTTP {exc.status})") from None
        if not isinstance(data, dict):
            raise NotGossipd(f"{url} is not a gossipd node (GET /v1/status answered JSON {type(data).__name__}, "
                             f"not an object)")
        missing = [f for f in STATUS_FIELDS if f not in data]
        if missing:
            raise NotGossipd(f"{url} is not a gossipd node (GET /v1/status JSON lacks {', '.join(missing)})")
        check_protocol(url, data.get("protocol"))
        return data

    async def peers(self, url: str) -> dict[str, Any]:
        try:
            data = await self.request_json("GET", url, "/v1/peers")
        except DaemonError as exc:
            if exc.code == "starting":
                raise
            raise NotGossipd(f"{url} is not a gossipd node (GET /v1/peers answered HTTP {exc.status})") from None
        if not isinstance(data, dict) or any(f not in data for f in PEERS_FIELDS) \
                or not isinstance(data["peers"], list):
            raise NotGossipd(f"{url} is not a gossipd node (GET /v1/peers JSON lacks node_id or a peers list)")
        peers = []
        for entry in data["peers"]:
            if isinstance(entry, dict) and isinstance(entry.get("address"), str):
                peers.append({"address": entry["address"].rstrip("/"), "age": entry.get("age")})
            elif isinstance(entry, str):
                peers.append({"address": entry.rstrip("/"), "age": None})
        seeds = data.get("seeds") if isinstance(data.get("seeds"), list) else []
        return {**data, "peers": peers, "seeds": [str(s) for s in seeds]}

    async def join(self, url: str, peer: str) -> dict[str, Any]:
        data = await self.request_json("POST", url, "/v1/admin/join", json_body={"peer": peer}, admin=True)
        if not isinstance(data, dict):
            raise NotGossipd(f"{url} is not a gossipd node (POST /v1/admin/join answered non-object JSON)")
        return data

    async def model_onnx(self, url: str) -> bytes:
        status, ctype, body = await self.request("GET", url, "/v1/model?format=onnx", admin=True)
        if status == 200:
            if ctype == "application/json" or ctype.startswith("text/"):
                raise NotGossipd(f"{url} is not a gossipd node (GET /v1/model answered {ctype}, not a model file)")
            return body
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            raise _refused(url, "GET /v1/model", status, data)
        raise NotGossipd(f"{url} is not a gossipd node (GET /v1/model answered HTTP {status})")


def _refused(url: str, what: str, status: int, data: dict[str, Any]) -> DaemonError:
    detail = _one_line(str(data.get("detail") or data["error"]))
    if status == 401 and data["error"] in ("token_required", "bad_token"):
        # The daemon's own detail speaks of headers; say what to do with this command.
        detail = ("no admin token given: pass --token-file FILE (the node's admin_token_file, by default "
                  f"STATE_DIR/admin-token) or set ${TOKEN_ENV}" if data["error"] == "token_required" else
                  "the admin token is not this node's (check --token-file or $" + TOKEN_ENV + ")")
    return DaemonError(f"{url} refused {what}: HTTP {status} {data['error']}: {detail}", status, data["error"])


def check_protocol(url: str, protocol: Any) -> None:
    from gossipd.wire import SUPPORTED_VERSIONS

    if not isinstance(protocol, int) or isinstance(protocol, bool):
        raise NotGossipd(f"{url} is not a gossipd node (status 'protocol' is {protocol!r}, not a version number)")
    if protocol not in SUPPORTED_VERSIONS:
        ours = ", ".join(f"{v}" for v in SUPPORTED_VERSIONS)
        raise ProtocolMismatch(f"{url} speaks gossipd protocol v{protocol}; this gossip speaks {ours}")


def run(coro: Any) -> Any:
    """Run a coroutine from a click command (Ctrl-C ends it with exit code 130, no traceback)."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise SystemExit(130) from None

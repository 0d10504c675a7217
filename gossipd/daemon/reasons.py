"""Why a request to a peer failed, in a few words.

``str()`` of these exceptions is often empty (``asyncio.TimeoutError``) or
noisy (aiohttp's ``ClientConnectorError`` says ``ssl:default`` even for plain
HTTP). One function, used by the daemon's peer client and the ``gossip`` CLI,
so logs and error lines say "connection refused" or "timed out after 5s".
"""

from __future__ import annotations

import asyncio
import socket


def describe_exception(exc: BaseException, timeout: float | None = None) -> str:
    """'connection refused', 'timed out after 3s', 'unknown host ...': never empty."""
    import aiohttp  # only when something failed: callers that never fail need not load it

    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"timed out after {timeout:g}s" if timeout else "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_err = exc.os_error
        if isinstance(os_err, socket.gaierror):
            return f"unknown host {exc.host!r} ({os_err.strerror or os_err})"
        if isinstance(os_err, ConnectionRefusedError):
            return "connection refused"
        return (getattr(os_err, "strerror", None) or str(os_err) or type(os_err).__name__).strip()
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"broken response ({exc})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"bad HTTP response ({exc.message})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""An aiohttp resolver that only returns the IPs a :class:`PeerPolicy` allows.

aiohttp resolves host names through its connector's resolver, so wrapping it
checks every name at connect time against the addresses actually connected
to (no DNS-rebinding window). Literal IPs skip resolvers in aiohttp: they are
checked when an address is accepted (``PeerPolicy.check``), and the peer
client should check them again before each request.

Phase 2 wiring: ``aiohttp.TCPConnector(resolver=PolicyResolver(policy), ...)``.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from gossipd.addresses import AddressError, PeerPolicy

__all__ = ["PolicyResolver"]


class PolicyResolver(AbstractResolver):
    """Resolve with ``inner`` (aiohttp's default), then drop every IP ``policy`` refuses."""

    def __init__(self, policy: PeerPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy  # replaceable at run time (a reload)
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        try:
            allowed = set(self.policy.allowed_ips(host, [r["host"] for r in results]))
        except AddressError as exc:
            raise OSError(f"peer_allow: {exc}") from None  # aiohttp reports it as a failed connect
        return [r for r in results if ipaddress.ip_address(r["host"]) in allowed]

    async def close(self) -> None:
        await self._inner.close()

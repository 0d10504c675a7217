"""Peer addresses taken from the network, and where a node may connect (no SSRF).

An address accepted from the network (a message's sender, a shuffle entry, an
admin join) must be exactly ``http://HOST:PORT`` or ``https://HOST:PORT``: no
user info, path, query or fragment, an explicit port, and HOST in its one
canonical spelling (lower-case name, dotted-quad IPv4, compressed ``[IPv6]``).
One spelling per node matters twice: addresses are identities in peer views,
and a sealed message is bound to the receiver's address string.

A :class:`PeerPolicy` (config ``peer_allow``, CIDRs; default any) limits which
IPs a node ever connects to. Refused whatever ``peer_allow`` says: unspecified,
multicast and broadcast addresses. Refused unless a ``peer_allow`` entry lies
inside them (naming them on purpose; ``0.0.0.0/0`` does not): link-local
(169.254.0.0/16, fe80::/10) and cloud metadata services (fd00:ec2::254,
100.100.100.200, 168.63.129.16). IPv4 addresses embedded in IPv6 (mapped,
6to4, NAT64) are judged as the IPv4 address they reach.

Host names: the syntax is checked when the address arrives; a name's IPs are
only known when it is resolved, so they are checked then, at connect time
(:meth:`PeerPolicy.allowed_ips`), against the IPs actually connected to, which
also defeats DNS rebinding. Literal IPs (and ``localhost``) are checked at once.
Pure: no sockets, no resolution here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from gossipd import wire
from gossipd.core.messages import Message, ModelMessage, ShuffleReply, ShuffleRequest
from gossipd.wire import WireError

__all__ = [
    "ALWAYS_REFUSED",
    "REFUSED_UNLESS_LISTED",
    "AddressError",
    "PeerAddress",
    "PeerPolicy",
    "parse_address",
    "screen_message",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_net = ipaddress.ip_network
#: Never a peer, whatever peer_allow says.
ALWAYS_REFUSED: tuple[IPNetwork, ...] = (
    _net("0.0.0.0/8"), _net("::/128"),  # unspecified ("this host": connecting reaches ourselves)
    _net("224.0.0.0/4"), _net("ff00::/8"),  # multicast
    _net("255.255.255.255/32"),  # broadcast
)
#: Refused unless a peer_allow entry lies inside one of them.
REFUSED_UNLESS_LISTED: tuple[IPNetwork, ...] = (
    _net("169.254.0.0/16"),  # IPv4 link-local; 169.254.169.254 is AWS/GCP/Azure/OpenStack metadata
    _net("fe80::/10"),  # IPv6 link-local
    _net("fd00:ec2::254/128"),  # AWS metadata over IPv6
    _net("100.100.100.200/32"),  # Alibaba Cloud metadata
    _net("168.63.129.16/32"),  # Azure host services (WireServer)
)
_NAT64 = _net("64:ff9b::/96")

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")


class AddressError(ValueError):
    """An address that is refused; the message is one sentence naming why."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A checked peer address; ``ip`` is set when the host is a literal IP."""

    scheme: str
    host: str  # as written in the URL (IPv6 without brackets)
    port: int
    ip: IPAddress | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_address(text: object) -> PeerAddress:
    """Check the syntax of a peer address; :class:`AddressError` says what is wrong."""
    if not isinstance(text, str):
        raise AddressError(f"an address must be a string, got {type(text).__name__}")
    if not 0 < len(text) <= wire.MAX_ADDRESS_LEN:
        raise AddressError(f"an address must be 1 to {wire.MAX_ADDRESS_LEN} characters, got {len(text)}")
    if not (text.isascii() and text.isprintable()) or " " in text:
        raise AddressError("an address must be printable ASCII without spaces (IDN hosts in punycode)")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise AddressError(f"{text!r}: the scheme must be http:// or https://")
    for char, part in (("@", "user info"), ("/", "a path"), ("?", "a query"), ("#", "a fragment"), ("\\", "a backslash")):
        if char in rest:
            raise AddressError(f"{text!r}: an address has no {part}; expected {scheme}://HOST:PORT")
    if rest.startswith("["):
        host, close, port_text = rest[1:].partition("]")
        if not close or not port_text.startswith(":"):
            raise AddressError(f"{text!r}: expected {scheme}://[IPv6]:PORT")
        port_text = port_text[1:]
        ip: IPAddress | None = _ipv6(text, host)
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise AddressError(f"{text!r}: the port is missing; expected {scheme}://HOST:PORT")
        ip = _ipv4_or_name(text, host)
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise AddressError(f"{text!r}: the port must be a number from 1 to 65535 without leading zeros")
    return PeerAddress(scheme, host, int(port_text), ip)


def _ipv6(text: str, host: str) -> ipaddress.IPv6Address:
    if "%" in host:
        raise AddressError(f"{text!r}: zone ids like %eth0 are not allowed")
    try:
        ip = ipaddress.IPv6Address(host)
    except ValueError:
        raise AddressError(f"{text!r}: {host!r} is not an IPv6 address") from None
    # RFC 5952 form; a mapped IPv4 may also end in its dotted quad (Python 3.13
    # prints it so, 3.11 in hex).
    if host != str(ip) and not (ip.ipv4_mapped is not None and host == f"::ffff:{ip.ipv4_mapped}"):
        raise AddressError(f"{text!r}: write the IPv6 address as [{ip}]")
    return ip


def _ipv4_or_name(text: str, host: str) -> ipaddress.IPv4Address | None:
    if ":" in host:
        raise AddressError(f"{text!r}: an IPv6 host goes in brackets, like http://[::1]:7070")
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        pass
    # Anything the C resolver would read as an IPv4 number (2130706433, 0x7f.1,
    # 0177.0.0.1) must be written as a plain dotted quad, or it would slip past
    # the literal-IP check and reach the address anyway.
    try:
        packed = socket.inet_aton(host)
    except OSError:
        pass
    else:
        raise AddressError(f"{text!r}: write the IPv4 address as {ipaddress.IPv4Address(packed)}")
    if host != host.lower():
        raise AddressError(f"{text!r}: write the host name in lower case, {host.lower()!r}")
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressError(f"{text!r}: {host!r} is not a host name (letters, digits, hyphens; dot-separated labels)")
    if labels[-1].isdigit():
        raise AddressError(f"{text!r}: {host!r} is neither an IPv4 address nor a host name")
    return None


def _effective(ip: IPAddress) -> list[IPAddress]:
    """``ip`` and any IPv4 address it reaches through a gateway (6to4, NAT64)."""
    out: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None:
            out.append(ip.sixtofour)
        if ip in _NAT64:
            out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


@dataclass(frozen=True)
class PeerPolicy:
    """Which IPs this node may connect to; ``allow=None`` means any (minus the refused ranges)."""

    allow: tuple[IPNetwork, ...] | None = None

    @classmethod
    def from_cidrs(cls, entries: Iterable[str], what: str = "peer_allow") -> PeerPolicy:
        """From config: CIDRs or single IPs; ``"*"`` means any. Errors name ``what`` and the entry."""
        entries = list(entries)
        if not entries:
            raise ValueError(f'{what}: empty, so no peer would ever be allowed; use ["*"] for any')
        if "*" in entries:
            return cls(None)
        nets = []
        for entry in entries:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except (ValueError, TypeError):
                raise ValueError(f"{what}: {entry!r} is not an IP network (CIDR like 10.0.0.0/8, or \"*\")") from None
        return cls(tuple(nets))

    def refusal(self, ip: IPAddress) -> str | None:
        """Why this node must not connect to ``ip``, or None if it may."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d on the wire
        for addr in _effective(ip):
            for net in ALWAYS_REFUSED:
                if addr.version == net.version and addr in net:
                    return f"{ip} is not a unicast address ({net})"
        if self.allow is not None and not any(ip.version == n.version and ip in n for n in self.allow):
            return f"{ip} is not in peer_allow"
        for addr in _effective(ip):
            for net in REFUSED_UNLESS_LISTED:
                if addr.version == net.version and addr in net and not self._lists(addr, net):
                    return (f"{ip} is a link-local or cloud metadata address ({net}); "
                            "list it in peer_allow to allow it")
        return None

    def _lists(self, addr: IPAddress, refused: IPNetwork) -> bool:
        return any(n.version == refused.version and addr in n and n.subnet_of(refused)  # type: ignore[arg-type]
                   for n in self.allow or ())

    def check(self, address: str | PeerAddress) -> PeerAddress:
        """Syntax and, for a literal IP or ``localhost``, the policy; :class:`AddressError` if refused.

        A host name passes here and is checked on resolution (:meth:`allowed_ips`).
        """
        peer = parse_address(address) if isinstance(address, str) else address
        for ip in _literal_ips(peer):
            reason = self.refusal(ip)
            if reason is not None:
                raise AddressError(f"{peer.url}: {reason}")
        return peer

    def allowed_ips(self, host: str, ips: Iterable[IPAddress | str]) -> list[IPAddress]:
        """The resolved IPs of ``host`` this node may connect to; :class:`AddressError` if none.

        For the daemon's resolver (phase 2): connect only to what this returns.
        """
        allowed, reasons = [], []
        for raw in ips:
            ip = ipaddress.ip_address(raw) if isinstance(raw, str) else raw
            reason = self.refusal(ip)
            if reason is None:
                allowed.append(ip)
            else:
                reasons.append(reason)
        if not allowed:
            raise AddressError(f"{host}: no allowed address ({'; '.join(reasons) or 'it did not resolve'})")
        return allowed


def _literal_ips(peer: PeerAddress) -> list[IPAddress]:
    if peer.ip is not None:
        return [peer.ip]
    if peer.host == "localhost" or peer.host.endswith(".localhost"):  # RFC 6761: always loopback
        return [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    return []


def screen_message(message: Message, policy: PeerPolicy) -> tuple[Message, tuple[tuple[str, str], ...]]:
    """``message`` with every address checked: ``(message, dropped)``.

    A refused sender refuses the whole message (400 ``bad_sender`` for the
    syntax, 403 ``peer_not_allowed`` for the policy); refused shuffle entries
    are dropped and returned as ``(address, reason)`` pairs for a counter and
    a log line, so one bad entry does not cost the good ones.
    """
    try:
        sender = parse_address(message.sender)
    except AddressError as exc:
        raise WireError(400, "bad_sender", f"sender: {exc}") from None
    try:
        policy.check(sender)
    except AddressError as exc:
        raise WireError(403, "peer_not_allowed", f"sender: {exc}") from None
    if isinstance(message, ModelMessage):
        return message, ()
    kept, dropped = [], []
    for entry in message.entries:
        try:
            policy.check(entry.address)
        except AddressError as exc:
            dropped.append((entry.address, str(exc)))
        else:
            kept.append(entry)
    if not dropped:
        return message, ()
    cls = ShuffleRequest if isinstance(message, ShuffleRequest) else ShuffleReply
    return cls(sender=message.sender, entries=tuple(kept)), tuple(dropped)

"""The sealed envelope: any peer message, encrypted and bound to its receiver.

A sealed message is a v1 msgpack map of type ``"sealed"`` (``docs/protocol.md``)::

    {"v": 1, "type": "sealed", "cluster": str, "sender": str, "to": str,
     "inner": "model" | "shuffle_request" | "shuffle_reply", "ts": int (Unix ms),
     "kid": <bin 8>, "nonce": <bin 12>, "ct": <bin: AES-256-GCM of the inner body + 16-byte tag>}

The inner body is an ordinary wire message (``wire.encode``), so the envelope
does not depend on the body format: a new codec or field in the body changes
nothing here. ``cluster``, ``sender``, ``to``, ``inner``, ``ts`` and ``v`` travel
in clear (a receiver can say precisely why a message is not for it) and are all
bound by the seal (``security.Binding``), built on the receiving side from its
*own* cluster and address.

Version negotiation: a node that predates sealing answers ``400 unknown_type``
(naming ``sealed``); a node without a keyring answers ``401 unauthenticated``
(``wire.decode``); a node with a keyring answers an unsealed message with
``401 unauthenticated``. There is no downgrade: keyed and unkeyed nodes do not talk.

:class:`PeerCodec` is the one object a driver needs: ``encode(message, to=, now=)``
and ``decode(body, now=)``, sealed when it has a keyring and plain v1 otherwise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import msgpack

from gossipd import security, wire
from gossipd.core.messages import Message
from gossipd.security import Binding, Keyring, ReplayGuard
from gossipd.wire import WireError

__all__ = ["PeerCodec", "open_message", "seal_message"]

_CT_KEY = msgpack.packb("ct")


def seal_message(
    message: Message,
    *,
    cluster: str,
    keyring: Keyring,
    to: str,
    now: float,
    nonce: bytes | None = None,
) -> bytearray:
    """``message`` for ``cluster``, sealed with the keyring's first key for the node advertised as ``to``.

    ``now`` is the sender's Unix time in seconds. ``nonce`` is for tests only;
    by default a fresh random one is drawn (``security.new_nonce``).
    """
    inner = wire.encode(message, cluster=cluster)
    kind = wire.message_type(message)
    key = keyring.primary
    nonce = security.new_nonce() if nonce is None else nonce
    binding = Binding(wire.PROTOCOL_VERSION, cluster, kind, message.sender, to, int(now * 1000))
    head = msgpack.packb(
        {"v": binding.version, "type": wire.SEALED, "cluster": cluster, "sender": message.sender, "to": to,
         "inner": kind, "ts": binding.ts_ms, "kid": key.id, "nonce": nonce},
        use_bin_type=True,
    )
    # ct is the last key, so the ciphertext is encrypted straight behind this
    # header (no re-pack of a multi-megabyte bin): the fixmap 0x89 becomes 0x8a.
    prefix = b"".join((b"\x8a", head[1:], _CT_KEY, b"\xc6",
                       struct.pack(">I", len(inner) + security.TAG_BYTES)))
    return security.seal(key, nonce, inner, binding, prefix=prefix)


@dataclass(frozen=True, slots=True)
class _Envelope:
    cluster: str
    sender: str
    to: str
    inner: str
    ts_ms: int
    kid: bytes
    nonce: bytes
    ct: memoryview


def _fields(parsed: wire.Parsed) -> _Envelope:
    """The envelope's fields, each of the right msgpack type (400 otherwise)."""
    obj = parsed.obj
    cluster = wire.require_field(obj, "cluster", str)
    sender = wire.require_address(obj.get("sender", wire.MISSING), "sender", "bad_sender")
    to = wire.require_address(obj.get("to", wire.MISSING), "to", "bad_field")
    inner = wire.require_field(obj, "inner", str)
    if inner not in wire.MESSAGE_TYPES:
        raise WireError(400, "unknown_type", f"unknown sealed message type {inner[:64]!r}; "
                                             f"known: {', '.join(wire.MESSAGE_TYPES)}")
    ts_ms = wire.require_field(obj, "ts", int)
    kid = wire.require_field(obj, "kid", bytes)
    nonce = wire.require_field(obj, "nonce", bytes)
    span = parsed.span_of("ct")
    if span is None:
        wire.require_field(obj, "ct", bytes)  # missing_field, or bad_field if not binary
        raise AssertionError("unreachable: a binary ct has a span")
    _, start, end = span
    return _Envelope(cluster, sender, to, inner, ts_ms, kid, nonce, memoryview(parsed.view)[start:end])


def open_message(
    body: bytes | bytearray | memoryview,
    *,
    cluster: str,
    address: str,
    keyring: Keyring,
    guard: ReplayGuard,
    now: float,
    expected_arch: str | None = None,
    expected_params: int | None = None,
    max_bytes: int | None = None,
    expected_stats: int | None = None,
    expected_partitions: int | None = None,
) -> Message:
    """Open a sealed body addressed to this node (``address``, ``cluster``); a WireError otherwise.

    Checks, in order, the first failure answering: size and structure (as for
    every message), that the body is sealed, the envelope's fields, cluster and
    receiver, key id, timestamp window, nonce not seen, the seal itself, and
    then the inner body exactly as ``wire.decode`` checks a plain one (its
    ``params`` is a zero-copy view of the decrypted plaintext). Cheap checks
    come first so that a flood of forgeries costs no decryption. The nonce is
    remembered only once the seal verifies.
    """
    if max_bytes is None and expected_params is not None:
        max_bytes = wire.max_body_bytes(expected_params)
    parsed = wire.parse(body, max_bytes=max_bytes)
    if parsed.kind != wire.SEALED:
        raise security.unauthenticated(
            f"this node accepts only sealed messages; got an unsealed {parsed.kind!r} "
            "(give the sender the cluster's keyring)")
    env = _fields(parsed)
    if env.cluster != cluster:
        raise security.unauthenticated(f"sealed for cluster {env.cluster[:128]!r}, not this node's")
    if env.to != address:
        raise security.unauthenticated(f"sealed for {env.to!r}, but this node is {address!r}")
    key = keyring.require(env.kid)
    guard.check(env.kid, env.nonce, env.ts_ms, now)
    # The receiver's own cluster and address go into the binding, not the envelope's claims.
    binding = Binding(wire.PROTOCOL_VERSION, cluster, env.inner, env.sender, address, env.ts_ms)
    plaintext = security.open_sealed(key, env.nonce, env.ct, binding)
    guard.admit(env.kid, env.nonce, env.ts_ms, now)

    message = wire.decode(plaintext, cluster=cluster, expected_arch=expected_arch,
                          expected_params=expected_params, max_bytes=max_bytes, expected_stats=expected_stats,
                          expected_partitions=expected_partitions)
    # Only a key holder can get here; still, what the envelope promised must be what it held.
    if wire.message_type(message) != env.inner or message.sender != env.sender:
        raise security.unauthenticated(
            f"the sealed body ({wire.message_type(message)} from {message.sender[:256]!r}) disagrees with "
            f"its envelope ({env.inner} from {env.sender!r})")
    return message


@dataclass
class PeerCodec:
    """Peer messages to bytes and back for one node: sealed with a keyring, plain v1 without.

    ``address`` is this node's advertised URL (what peers seal for);
    ``keyring`` may be swapped at run time (:meth:`reload`) while the replay
    memory carries on. Only ``now`` comes from outside: the driver's wall clock.
    """

    cluster: str
    address: str
    keyring: Keyring | None = None
    expected_arch: str | None = None
    expected_params: int | None = None
    max_bytes: int | None = None
    expected_stats: int | None = None  # scaling-statistics columns a model must carry (wire.decode)
    expected_partitions: int | None = None  # the node's partitions P (wire.decode)
    guard: ReplayGuard = field(default_factory=ReplayGuard)

    @property
    def sealed(self) -> bool:
        return self.keyring is not None

    def reload(self, keyring: Keyring) -> None:
        """Use ``keyring`` from now on (SIGHUP); nonces already seen stay remembered."""
        self.keyring = keyring

    def encode(self, message: Message, *, to: str, now: float) -> bytes | bytearray:
        """``message`` for the peer advertised as ``to`` (used only when sealing)."""
        if self.keyring is None:
            return wire.encode(message, cluster=self.cluster)
        return seal_message(message, cluster=self.cluster, keyring=self.keyring, to=to, now=now)

    def decode(self, body: bytes | bytearray | memoryview, *, now: float) -> Message:
        keyring = self.keyring  # one read: a reload in between does not mix two keyrings
        if keyring is None:
            return wire.decode(body, cluster=self.cluster, expected_arch=self.expected_arch,
                               expected_params=self.expected_params, max_bytes=self.max_bytes,
                               expected_stats=self.expected_stats, expected_partitions=self.expected_partitions)
        return open_message(body, cluster=self.cluster, address=self.address, keyring=keyring,
                            guard=self.guard, now=now, expected_arch=self.expected_arch,
                            expected_params=self.expected_params, max_bytes=self.max_bytes,
                            expected_stats=self.expected_stats, expected_partitions=self.expected_partitions)

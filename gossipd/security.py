"""Keys, seals and replay memory for peer messages.

Pure: no sockets, no clock reads (every function that needs the time is handed
``now``, Unix seconds). The only randomness is the nonce, drawn from the OS
(``os.urandom``) because a nonce must be unpredictable and never repeat, which
a seeded generator cannot promise.

- :class:`Keyring`: symmetric keys, one base64 line each in a file; the first
  seals, all of them open. Each key has an 8-byte id derived from it, so a
  sealed message says which key sealed it and the receiver tries one key, not
  all of them.
- :func:`seal` / :func:`open_sealed`: AES-256-GCM (``cryptography``) over a
  plaintext, with a :class:`Binding` as the authenticated data: protocol
  version, cluster, message type, sender, the receiver's advertised address and
  a timestamp. A sealed message cannot be moved to another node, cluster or type.
- :class:`ReplayGuard`: refuses timestamps outside ``±window`` (``stale``) and
  nonces already seen inside it (``replayed``), in bounded memory.

Every refusal is a :class:`gossipd.wire.WireError` with status 401, so the HTTP
layer answers it like any other rejection. The byte layout of a sealed message
is ``gossipd/envelope.py``'s; ``docs/security.md`` has the threat model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gossipd.wire import WireError

__all__ = [
    "DEFAULT_REPLAY_CAPACITY",
    "DEFAULT_WINDOW",
    "KEY_BYTES",
    "KEY_ID_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "Binding",
    "Key",
    "Keyring",
    "KeyringError",
    "ReplayGuard",
    "generate_key_line",
    "key_id",
    "keyring_permission_problem",
    "new_nonce",
    "open_sealed",
    "seal",
    "unauthenticated",
]

KEY_BYTES = 32  # AES-256
KEY_ID_BYTES = 8
NONCE_BYTES = 12  # GCM's native 96-bit nonce: no GHASH of the nonce, the full security bound
TAG_BYTES = 16
DEFAULT_WINDOW = 60.0  # seconds either side of now: the documented clock-skew tolerance
DEFAULT_REPLAY_CAPACITY = 16_384  # ~4 MB; 136 messages/s sustained over a 2-minute span

_KEY_ID_LABEL = b"gossipd key id v1\x00"
_AAD_LABEL = "gossipd/sealed"
_MAKE_ONE = "make one with `gossip keygen`"


def unauthenticated(detail: str) -> WireError:
    return WireError(401, "unauthenticated", detail)


# ------------------------------------------------------------------------ keys


class KeyringError(ValueError):
    """A keyring that cannot be used; the message names the file and line, never a key."""


def key_id(secret: bytes) -> bytes:
    """The 8-byte public id of a key: SHA-256 over a label and the key, truncated.

    One-way, so publishing it (in every sealed message, in logs, in status)
    says nothing about the key; 64 bits make an accidental clash between the
    few keys of one keyring negligible, and :class:`Keyring` refuses one anyway.
    """
    return hashlib.sha256(_KEY_ID_LABEL + secret).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True, eq=False, repr=False)
class Key:
    """One 256-bit key, its id and its AEAD. ``repr`` shows the id only."""

    secret: bytes
    id: bytes
    aead: AESGCM

    def __repr__(self) -> str:
        return f"Key(id={self.hex_id})"

    @classmethod
    def from_secret(cls, secret: bytes) -> Key:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes, got {len(secret)}")
        return cls(bytes(secret), key_id(secret), AESGCM(secret))

    @property
    def hex_id(self) -> str:
        return self.id.hex()


def generate_key_line() -> str:
    """A new random key as one keyring line: base64 of 32 bytes, then its id as a comment."""
    secret = os.urandom(KEY_BYTES)
    return f"{base64.b64encode(secret).decode('ascii')}  # id {key_id(secret).hex()}"


@dataclass(frozen=True)
class Keyring:
    """Keys in order: ``keys[0]`` seals, every key opens.

    Rotation without downtime (``docs/security.md``): install the new key
    second on every node, reload; move it first, reload; remove the old one,
    reload. At every step every node can open what every other node seals.
    """

    keys: tuple[Key, ...]
    source: str = "keyring"

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError(f"{self.source}: no keys (one base64 key a line; {_MAKE_ONE})")
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise KeyringError(f"{self.source}: two keys share an id")
        object.__setattr__(self, "_by_id", {k.id: k for k in self.keys})

    @property
    def primary(self) -> Key:
        """The key that seals."""
        return self.keys[0]

    def find(self, kid: bytes) -> Key | None:
        return self._by_id.get(bytes(kid))  # type: ignore[attr-defined]

    def require(self, kid: bytes) -> Key:
        """The key with id ``kid``, or 401 ``unauthenticated`` naming the ids this node holds."""
        key = self.find(kid)
        if key is None:
            shown = bytes(kid[:KEY_ID_BYTES]).hex() + ("..." if len(kid) > KEY_ID_BYTES else "")
            raise unauthenticated(f"sealed with key id {shown}, which this node does not hold "
                                  f"(it holds {', '.join(self.ids())})")
        return key

    def ids(self) -> list[str]:
        """Hex key ids in order, for status pages and logs (public, unlike the keys)."""
        return [k.hex_id for k in self.keys]

    @classmethod
    def parse(cls, text: str, source: str = "keyring") -> Keyring:
        """Parse keyring text: one base64 key a line; blank lines and ``#`` comments ignored.

        Errors name ``source`` and the line number, never the line's content
        (it may be a key with a typo in it).
        """
        keys: list[Key] = []
        first_line: dict[bytes, int] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            token = raw.split("#", 1)[0].strip()  # '#' never occurs in base64
            if not token:
                continue
            where = f"{source} line {number}"
            if len(token.split()) != 1:
                raise KeyringError(f"{where}: expected one key on the line, found {len(token.split())} words")
            try:
                secret = base64.b64decode(token, validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"{where}: not base64; expected the base64 of {KEY_BYTES} random bytes "
                                   f"({_MAKE_ONE})") from None
            if len(secret) != KEY_BYTES:
                raise KeyringError(f"{where}: the key is {len(secret)} bytes, expected {KEY_BYTES} ({_MAKE_ONE})")
            key = Key.from_secret(secret)
            if key.id in first_line:
                raise KeyringError(f"{where}: the same key as line {first_line[key.id]}")
            first_line[key.id] = number
            keys.append(key)
        return cls(tuple(keys), source)

    @classmethod
    def load(cls, path: str | Path) -> Keyring:
        """Read and parse the keyring file at ``path``; :class:`KeyringError` names it on any failure."""
        path = Path(path)
        try:
            text = path.read_text(encoding="ascii")
        except UnicodeDecodeError:
            raise KeyringError(f"{path}: not a keyring (non-ASCII bytes; one base64 key a line)") from None
        except OSError as exc:
            raise KeyringError(f"{path}: cannot read the keyring ({exc.strerror or exc})") from None
        return cls.parse(text, str(path))


def keyring_permission_problem(path: str | Path) -> str | None:
    """A sentence if the keyring file is readable or writable by group or others, else None.

    Anyone who can read the keyring is a member of the cluster.
    """
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None  # load() reports unreadable files
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} is accessible to group or others (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
    return None


# ------------------------------------------------------------------- sealing


@dataclass(frozen=True, slots=True)
class Binding:
    """What a seal binds besides the body; both sides build it from their own view.

    The sender fills it with the receiver's advertised address; the receiver
    with its own address and cluster, so a message sealed for anyone else does
    not open. ``ts_ms`` is the sender's Unix time in milliseconds.
    """

    version: int
    cluster: str
    type: str
    sender: str
    receiver: str
    ts_ms: int

    def associated_data(self) -> bytes:
        # msgpack of str and int is canonical (shortest form), so both sides
        # build the same bytes from the same values; the label keeps these
        # bytes from meaning anything in another protocol.
        return msgpack.packb(
            [_AAD_LABEL, self.version, self.cluster, self.type, self.sender, self.receiver, self.ts_ms],
            use_bin_type=True,
        )


def new_nonce() -> bytes:
    """A fresh random 96-bit nonce from the OS.

    Random nonces are safe while a key seals far fewer than 2**32 messages
    (NIST SP 800-38D); the chance that two of ``q`` nonces collide is about
    ``q**2 / 2**97``. A 1000-node cluster at the default periods (a model every
    5 s, a shuffle every 10 s: 0.4 sealed messages per node per second) seals
    1.3e10 messages a year: a 1e-9 chance, and 2**32 messages take 124 days.
    Rotating keys (``docs/security.md``) restarts the count.
    """
    return os.urandom(NONCE_BYTES)


def seal(
    key: Key, nonce: bytes, plaintext: bytes | bytearray | memoryview, binding: Binding, *, prefix: bytes = b""
) -> bytearray:
    """``prefix``, then AES-256-GCM of ``plaintext`` under ``key`` (ciphertext and 16-byte tag).

    One buffer, written once: the ciphertext of a multi-megabyte model is
    encrypted straight behind the envelope header that ``prefix`` carries.
    """
    out = bytearray(len(prefix) + len(plaintext) + TAG_BYTES)
    out[: len(prefix)] = prefix
    key.aead.encrypt_into(nonce, plaintext, binding.associated_data(), memoryview(out)[len(prefix):])
    return out


def open_sealed(key: Key, nonce: bytes, ciphertext: bytes | memoryview, binding: Binding) -> bytes:
    """The plaintext, or 401 ``unauthenticated`` (bad nonce length, bad tag)."""
    if len(nonce) != NONCE_BYTES:
        raise unauthenticated(f"the nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    if len(ciphertext) < TAG_BYTES:
        raise unauthenticated(f"the ciphertext is {len(ciphertext)} bytes, shorter than its {TAG_BYTES}-byte tag")
    try:
        return key.aead.decrypt(nonce, ciphertext, binding.associated_data())
    except InvalidTag:
        raise unauthenticated(
            "the seal does not verify: the message was altered in transit, or it was sealed for "
            "another receiver, cluster, message type, sender or time"
        ) from None


# -------------------------------------------------------------------- replay


class ReplayGuard:
    """Refuses stale timestamps and repeated nonces, in at most ``capacity`` entries.

    A nonce is remembered (with its key id) from the moment its message opens
    until its timestamp leaves the window; a message whose timestamp is
    outside ``now ± window`` is ``stale`` anyway, so the memory covers every
    message that could still be accepted.

    When the memory is full, the entry with the oldest timestamp is forgotten
    and the guard's *floor* rises to that timestamp: from then on a message
    stamped at or below the floor is refused as ``stale``. So a replay is
    never accepted, whatever the load: its nonce is either still remembered or
    its timestamp is at or below the floor. What a flood costs is the oldest
    legitimate messages (those near the window's edge), never memory. Only
    messages that opened (key holders) are recorded, so outsiders cannot fill it.

    Thread-safe: :meth:`check` runs before the (costly) decryption, and
    :meth:`admit` checks again and records in one step after it.
    """

    def __init__(self, window: float = DEFAULT_WINDOW, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.window = float(window)
        self.capacity = int(capacity)
        self._window_ms = int(round(window * 1000))
        self._seen: dict[bytes, int] = {}  # key id + nonce -> ts_ms
        self._heap: list[tuple[int, bytes]] = []  # (ts_ms, key id + nonce), oldest first
        self._floor = -(2**63)  # every timestamp <= floor is refused
        self._lock = threading.Lock()
        self.evicted = 0  # entries forgotten early because the memory was full

    @property
    def entries(self) -> int:
        """Nonces remembered now (a property, not ``__len__``: an empty guard must stay truthy)."""
        return len(self._seen)

    @property
    def floor_ms(self) -> int:
        return self._floor

    def check(self, kid: bytes, nonce: bytes, ts_ms: int, now: float) -> None:
        """Raise 401 ``stale`` or ``replayed`` if this message cannot be accepted; record nothing."""
        with self._lock:
            self._check(bytes(kid) + bytes(nonce), ts_ms, now)

    def admit(self, kid: bytes, nonce: bytes, ts_ms: int, now: float) -> None:
        """Check again and remember the nonce; call once the message has opened."""
        entry = bytes(kid) + bytes(nonce)
        with self._lock:
            self._check(entry, ts_ms, now)
            if len(self._seen) >= self.capacity:
                oldest_ts, _ = self._heap[0]
                if ts_ms <= oldest_ts:  # this one would be the first to go: refuse it instead
                    raise WireError(401, "stale", self._floor_detail(oldest_ts))
                self._forget_oldest()
                self.evicted += 1
            self._seen[entry] = ts_ms
            heapq.heappush(self._heap, (ts_ms, entry))

    def _check(self, entry: bytes, ts_ms: int, now: float) -> None:
        now_ms = int(now * 1000)
        self._expire(now_ms)
        age_ms = now_ms - ts_ms
        if abs(age_ms) > self._window_ms:
            when = f"{age_ms / 1000:.1f} s old" if age_ms > 0 else f"{-age_ms / 1000:.1f} s in the future"
            raise WireError(401, "stale", f"the message's timestamp is {when}; this node accepts "
                                          f"±{self.window:g} s (clock skew tolerance): check both clocks (NTP)")
        if ts_ms <= self._floor:
            raise WireError(401, "stale", self._floor_detail(self._floor))
        if entry in self._seen:
            raise WireError(401, "replayed", "this message (key id and nonce) was already received")

    def _floor_detail(self, floor_ms: int) -> str:
        return (f"the message's timestamp is at or before {floor_ms} ms, the oldest this node's replay memory "
                f"({self.capacity} entries, full) still covers")

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self._window_ms
        while self._heap and self._heap[0][0] < horizon:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        ts_ms, entry = heapq.heappop(self._heap)
        del self._seen[entry]
        # Even an expiry raises the floor: if the clock steps back, a message
        # whose nonce was forgotten must not come back inside the window.
        self._floor = max(self._floor, ts_ms)

"""Keyring parsing, the AEAD seal and the replay guard: pure functions, no sockets, no clock."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipd import security
from gossipd.security import Binding, Keyring, KeyringError, ReplayGuard
from gossipd.wire import WireError

SEEDED = settings(derandomize=True, deadline=None, max_examples=100)
NOW = 1_700_000_000.0
SECRETS = [bytes([i]) * 32 for i in range(1, 4)]  # fixed keys A, B, C: reproducible ids
A, B, C = (base64.b64encode(s).decode() for s in SECRETS)


def binding(**over) -> Binding:
    fields = {"version": 1, "cluster": "lab", "type": "model", "sender": "http://10.0.0.1:7070",
              "receiver": "http://10.0.0.2:7070", "ts_ms": int(NOW * 1000)}
    fields.update(over)
    return Binding(**fields)


def expect_401(code: str, fn, *args) -> WireError:
    with pytest.raises(WireError) as info:
        fn(*args)
    assert (info.value.status, info.value.code) == (401, code), repr(info.value)
    assert info.value.to_json() == {"error": code, "detail": info.value.detail}
    return info.value


# ---------------------------------------------------------------------- keyring


def test_keyring_parses_keys_in_order_with_comments_and_blank_lines():
    text = f"# cluster lab\n\n  {B}  # new key, second for now\n\t{A}\n   \n# end\n"
    ring = Keyring.parse(text, "ring")
    assert [k.secret for k in ring.keys] == [SECRETS[1], SECRETS[0]]
    assert ring.primary.secret == SECRETS[1]
    assert ring.ids() == [security.key_id(SECRETS[1]).hex(), security.key_id(SECRETS[0]).hex()]
    assert ring.find(security.key_id(SECRETS[0])) is ring.keys[1]
    assert ring.find(b"\x00" * 8) is None


def test_key_ids_are_derived_public_and_distinct():
    ids = {security.key_id(s) for s in SECRETS}
    assert len(ids) == 3 and all(len(i) == security.KEY_ID_BYTES for i in ids)
    assert security.key_id(SECRETS[0]) == security.key_id(bytes(SECRETS[0]))  # deterministic
    assert SECRETS[0].hex() not in repr(Keyring.parse(A)) and "id=" in repr(Keyring.parse(A).primary)


@pytest.mark.parametrize(
    "text, line, words",
    [
        (f"{A}\nnot-base64!\n", 2, "not base64"),
        (f"# c\n{base64.b64encode(b'x' * 16).decode()}\n", 2, "16 bytes, expected 32"),
        (f"{A} {B}\n", 1, "one key on the line"),
        (f"{A}\n\n{A}  # again\n", 3, "same key as line 1"),
        (f"{A}\n{A[:-4]}\n", 2, "bytes, expected 32"),
        (f"{A}\n{A}=\n", 2, "not base64"),
    ],
)
def test_keyring_errors_name_the_file_and_line_but_not_the_key(text, line, words):
    with pytest.raises(KeyringError) as info:
        Keyring.parse(text, "/etc/gossipd/keyring")
    msg = str(info.value)
    assert msg.startswith(f"/etc/gossipd/keyring line {line}: ") and words in msg
    assert A not in msg and A[:-4] not in msg


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  # another\n"])
def test_keyring_without_keys_says_how_to_make_one(text):
    with pytest.raises(KeyringError, match=r"^ring: no keys .*gossip keygen"):
        Keyring.parse(text, "ring")


def test_keyring_load_reads_a_file_and_names_it_on_errors(tmp_path: Path):
    path = tmp_path / "keyring"
    path.write_text(f"{A}\n{B}\n")
    assert [k.secret for k in Keyring.load(path).keys] == SECRETS[:2]
    with pytest.raises(KeyringError, match=r"keyring-missing: cannot read the keyring"):
        Keyring.load(tmp_path / "keyring-missing")
    path.write_bytes(A.encode() + b"\n\xff\xfe\n")
    with pytest.raises(KeyringError, match=rf"^{path}: not a keyring"):
        Keyring.load(path)
    path.write_text(f"{A}\nzz\n")
    with pytest.raises(KeyringError, match=rf"^{path} line 2: "):
        Keyring.load(path)


def test_keyring_permission_problem(tmp_path: Path):
    path = tmp_path / "keyring"
    path.write_text(A + "\n")
    path.chmod(0o600)
    assert security.keyring_permission_problem(path) is None
    path.chmod(0o640)
    problem = security.keyring_permission_problem(path)
    assert problem is not None and "0640" in problem and f"chmod 600 {path}" in problem


def test_generated_key_lines_parse_and_carry_their_id():
    lines = [security.generate_key_line() for _ in range(3)]
    ring = Keyring.parse("\n".join(lines))
    assert len({k.secret for k in ring.keys}) == 3
    for line, key in zip(lines, ring.keys):
        assert line.endswith(f"# id {key.hex_id}")


def test_keyring_require_names_the_ids_it_holds():
    ring = Keyring.parse(f"{A}\n{B}\n")
    assert ring.require(security.key_id(SECRETS[1])).secret == SECRETS[1]
    err = expect_401("unauthenticated", ring.require, security.key_id(SECRETS[2]))
    assert security.key_id(SECRETS[2]).hex() in err.detail and ", ".join(ring.ids()) in err.detail


# --------------------------------------------------------------------- sealing


def test_seal_open_round_trip():
    key = Keyring.parse(A).primary
    nonce = security.new_nonce()
    ct = security.seal(key, nonce, b"hello", binding())
    assert len(ct) == 5 + security.TAG_BYTES and b"hello" not in ct
    assert security.open_sealed(key, nonce, ct, binding()) == b"hello"
    assert security.open_sealed(key, nonce, memoryview(ct), binding()) == b"hello"


@pytest.mark.parametrize(
    "over",
    [{"version": 2}, {"cluster": "lab2"}, {"type": "shuffle_request"}, {"sender": "http://10.0.0.9:7070"},
     {"receiver": "http://10.0.0.3:7070"}, {"ts_ms": int(NOW * 1000) + 1}],
)
def test_every_bound_field_is_authenticated(over):
    key = Keyring.parse(A).primary
    nonce = security.new_nonce()
    ct = security.seal(key, nonce, b"payload", binding())
    err = expect_401("unauthenticated", security.open_sealed, key, nonce, ct, binding(**over))
    assert "does not verify" in err.detail


def test_wrong_key_nonce_or_length_does_not_open():
    ring = Keyring.parse(f"{A}\n{B}\n")
    nonce = security.new_nonce()
    ct = security.seal(ring.keys[0], nonce, b"payload", binding())
    expect_401("unauthenticated", security.open_sealed, ring.keys[1], nonce, ct, binding())
    expect_401("unauthenticated", security.open_sealed, ring.keys[0], os.urandom(12), ct, binding())
    err = expect_401("unauthenticated", security.open_sealed, ring.keys[0], nonce[:8], ct, binding())
    assert "12 bytes" in err.detail
    err = expect_401("unauthenticated", security.open_sealed, ring.keys[0], nonce, ct[:15], binding())
    assert "tag" in err.detail


@SEEDED
@given(st.binary(max_size=300), st.integers(0, 299), st.integers(0, 7))
def test_any_flipped_bit_of_a_ciphertext_is_refused(plaintext, pos, bit):
    key = Keyring.parse(A).primary
    nonce = b"\x01" * 12
    ct = bytearray(security.seal(key, nonce, plaintext, binding()))
    assert security.open_sealed(key, nonce, bytes(ct), binding()) == plaintext
    ct[pos % len(ct)] ^= 1 << bit
    expect_401("unauthenticated", security.open_sealed, key, nonce, bytes(ct), binding())


@SEEDED
@given(st.text(max_size=40), st.text(max_size=40), st.integers(-(2**63), 2**63 - 1))
def test_associated_data_is_injective_on_the_fields(a, b, ts):
    # Two different bindings never give the same authenticated data (msgpack
    # frames each field), so no field can be shifted into its neighbour.
    one = binding(cluster=a, sender=b, ts_ms=ts).associated_data()
    two = binding(cluster=a + b[:1], sender=b[1:], ts_ms=ts).associated_data()
    assert (one == two) == (b[:1] == "")


def test_rotation_at_the_keyring_level():
    a_only, ab, ba, b_only = (Keyring.parse(t) for t in (A, f"{A}\n{B}", f"{B}\n{A}", B))
    nonce = security.new_nonce()
    sealed_by_b = security.seal(ba.primary, nonce, b"m", binding())
    for ring in (ab, ba, b_only):
        key = ring.require(ba.primary.id)
        assert security.open_sealed(key, nonce, sealed_by_b, binding()) == b"m"
    expect_401("unauthenticated", a_only.require, ba.primary.id)
    # A node at step 1 ([A, B]) still seals with A: every node at step 0 or 2 opens it.
    sealed_by_ab = security.seal(ab.primary, nonce, b"m", binding())
    for ring in (a_only, ba):
        assert security.open_sealed(ring.require(ab.primary.id), nonce, sealed_by_ab, binding()) == b"m"


# ---------------------------------------------------------------------- replay


def ts(offset_s: float = 0.0) -> int:
    return int((NOW + offset_s) * 1000)


def test_window_edges_are_inclusive():
    guard = ReplayGuard(window=60)
    guard.admit(b"k" * 8, b"\x01" * 12, ts(-60), NOW)
    guard.admit(b"k" * 8, b"\x02" * 12, ts(+60), NOW)
    err = expect_401("stale", guard.check, b"k" * 8, b"\x03" * 12, ts(-60.001), NOW)
    assert "60.0 s old" in err.detail and "±60 s" in err.detail
    err = expect_401("stale", guard.admit, b"k" * 8, b"\x04" * 12, ts(+60.001), NOW)
    assert "in the future" in err.detail
    err = expect_401("stale", guard.check, b"k" * 8, b"\x05" * 12, ts(-120), NOW)
    assert "120.0 s old" in err.detail
    assert guard.entries == 2


def test_a_nonce_is_refused_once_admitted_and_check_records_nothing():
    guard = ReplayGuard()
    kid, nonce = b"k" * 8, b"n" * 12
    guard.check(kid, nonce, ts(), NOW)
    guard.check(kid, nonce, ts(), NOW)
    assert guard.entries == 0
    guard.admit(kid, nonce, ts(), NOW)
    expect_401("replayed", guard.check, kid, nonce, ts(), NOW + 1)
    expect_401("replayed", guard.admit, kid, nonce, ts(), NOW + 1)
    guard.admit(b"j" * 8, nonce, ts(), NOW)  # same nonce under another key is another message
    assert guard.entries == 2


def test_entries_expire_when_their_timestamp_leaves_the_window():
    guard = ReplayGuard(window=60)
    for i in range(10):
        guard.admit(b"k" * 8, bytes([i]) * 12, ts(i), NOW + i)
    assert guard.entries == 10
    guard.check(b"k" * 8, b"\xff" * 12, ts(65), NOW + 65)  # entries with ts < NOW+5 expire
    assert guard.entries == 5
    # An expired message is refused as stale by the window ...
    expect_401("stale", guard.check, b"k" * 8, bytes([0]) * 12, ts(0), NOW + 65)
    # ... and, if the clock steps back, by the floor the expiry left behind.
    err = expect_401("stale", guard.check, b"k" * 8, bytes([0]) * 12, ts(0), NOW + 1)
    assert "replay memory" in err.detail
    guard.check(b"k" * 8, b"\xfe" * 12, ts(5), NOW + 1)  # above the floor: fine


def test_full_memory_forgets_the_oldest_and_raises_the_floor():
    guard = ReplayGuard(window=60, capacity=4)
    for i in range(4):
        guard.admit(b"k" * 8, bytes([i]) * 12, ts(i), NOW)
    # Older than everything remembered: refused rather than evicting a newer entry.
    expect_401("stale", guard.admit, b"k" * 8, b"\xaa" * 12, ts(-1), NOW)
    guard.admit(b"k" * 8, b"\xbb" * 12, ts(10), NOW)
    assert guard.entries == 4 and guard.evicted == 1 and guard.floor_ms == ts(0)
    # The forgotten message (ts(0)) cannot come back: it is at the floor.
    expect_401("stale", guard.check, b"k" * 8, bytes([0]) * 12, ts(0), NOW)
    expect_401("replayed", guard.check, b"k" * 8, bytes([1]) * 12, ts(1), NOW)


@SEEDED
@given(
    capacity=st.integers(1, 6),
    events=st.lists(st.tuples(st.integers(0, 30), st.integers(-70, 70), st.booleans()), min_size=1, max_size=60),
)
def test_no_replay_is_ever_accepted_and_memory_stays_bounded(capacity, events):
    """Whatever the arrivals, an admitted (kid, nonce) is never admitted again."""
    guard = ReplayGuard(window=60, capacity=capacity)
    now = NOW
    admitted: list[tuple[bytes, int]] = []
    for i, (step, offset, replay) in enumerate(events):
        now += step
        if replay and admitted:
            nonce, t = admitted[i % len(admitted)]
            with pytest.raises(WireError) as info:
                guard.admit(b"k" * 8, nonce, t, now)
            assert info.value.status == 401 and info.value.code in ("replayed", "stale")
        else:
            nonce = i.to_bytes(12, "big")
            t = int((now + offset) * 1000)
            try:
                guard.admit(b"k" * 8, nonce, t, now)
            except WireError as err:
                assert err.code == "stale"
            else:
                admitted.append((nonce, t))
        assert guard.entries <= capacity


def test_guard_rejects_bad_settings():
    with pytest.raises(ValueError):
        ReplayGuard(window=0)
    with pytest.raises(ValueError):
        ReplayGuard(capacity=0)

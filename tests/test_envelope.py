"""The sealed envelope: round trips, negotiation with unkeyed nodes, every tampering, rotation.

Real AES-256-GCM from ``cryptography``; fixed keys and derandomized hypothesis,
so failures reproduce (nonces are random, and no assertion depends on them).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from mutations import EDITS, mutate  # noqa: E402

from gossipd import envelope, security, wire  # noqa: E402
from gossipd.core.messages import ModelMessage, PeerDescriptor, ShuffleReply, ShuffleRequest  # noqa: E402
from gossipd.envelope import PeerCodec  # noqa: E402
from gossipd.security import Keyring, ReplayGuard  # noqa: E402
from gossipd.wire import WireError  # noqa: E402

SEEDED = settings(derandomize=True, deadline=None, max_examples=100)
NOW = 1_700_000_000.0
CLUSTER = "lab"
ARCH = "mlp-3f2a9c"
N1, N2, N3 = "http://10.0.0.1:7070", "http://10.0.0.2:7070", "http://10.0.0.3:7070"
A, B, C = (base64.b64encode(bytes([i]) * 32).decode() for i in range(1, 4))
RING = Keyring.parse(A)


def model(n: int = 8, sender: str = N1) -> ModelMessage:
    return ModelMessage(sender, ARCH, 4.0, np.random.default_rng(0).standard_normal(n).astype(np.float32))


MESSAGES = [
    model(),
    ShuffleRequest(N1, (PeerDescriptor(N3, 2), PeerDescriptor("http://10.0.0.4:7070", 0))),
    ShuffleReply(N1, ()),
]


def seal(message=None, *, ring=RING, to=N2, now=NOW, cluster=CLUSTER) -> bytes:
    return envelope.seal_message(message or model(), cluster=cluster, keyring=ring, to=to, now=now)


def open_(body, *, ring=RING, address=N2, now=NOW + 0.5, guard=None, cluster=CLUSTER, **kw):
    return envelope.open_message(body, cluster=cluster, address=address, keyring=ring,
                                 guard=ReplayGuard() if guard is None else guard, now=now, **kw)


def expect(status: int, code: str, body, **kw) -> WireError:
    with pytest.raises(WireError) as info:
        open_(body, **kw)
    err = info.value
    assert (err.status, err.code) == (status, code), repr(err)
    assert err.detail and err.to_json()["error"] == code
    return err


def edit(body: bytes, **over) -> bytes:
    """Re-pack ``body`` with some envelope fields changed (what an attacker on the path can do)."""
    obj = msgpack.unpackb(body, raw=False)
    obj.update(over)
    return msgpack.packb(obj, use_bin_type=True)


def equal(a, b) -> bool:
    if isinstance(a, ModelMessage):
        return (a.sender, a.arch, a.age) == (b.sender, b.arch, b.age) and np.array_equal(a.params, b.params)
    return a == b


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_every_message_type(message):
    body = seal(message)
    got = open_(body, expected_arch=ARCH, expected_params=8)
    assert type(got) is type(message) and equal(got, message)


def test_envelope_is_a_v1_map_of_type_sealed_with_clear_routing_fields():
    obj = msgpack.unpackb(seal(), raw=False)
    assert obj["v"] == wire.PROTOCOL_VERSION == 1 and obj["type"] == wire.SEALED
    assert obj["type"] not in wire.MESSAGE_TYPES  # an older node answers 400 unknown_type
    assert (obj["cluster"], obj["sender"], obj["to"], obj["inner"]) == (CLUSTER, N1, N2, "model")
    assert obj["ts"] == int(NOW * 1000) and obj["kid"] == RING.primary.id
    assert len(obj["nonce"]) == security.NONCE_BYTES
    plain = wire.encode(model(), cluster=CLUSTER)
    assert len(obj["ct"]) == len(plain) + security.TAG_BYTES
    assert model().params.tobytes() not in seal()  # the parameters do not travel in clear
    assert list(obj)[-1] == "ct"


def test_opened_params_are_a_zero_copy_aligned_view_of_the_plaintext():
    big = model(100_000)
    got = open_(seal(big), expected_params=100_000)
    assert np.array_equal(got.params, big.params)
    assert got.params.flags.aligned and not got.params.flags.writeable
    assert isinstance(got.params.base, bytes) and len(got.params.base) == len(wire.encode(big, cluster=CLUSTER))


def test_nonces_differ_between_seals():
    nonces = {msgpack.unpackb(seal())["nonce"] for _ in range(20)}
    assert len(nonces) == 20


# ----------------------------------------------------------------- negotiation


def test_keyed_node_refuses_unsealed_messages():
    for message in MESSAGES:
        err = expect(401, "unauthenticated", wire.encode(message, cluster=CLUSTER))
        assert "only sealed" in err.detail


def test_unkeyed_node_refuses_sealed_messages():
    with pytest.raises(WireError) as info:
        wire.decode(seal(), cluster=CLUSTER)
    assert (info.value.status, info.value.code) == (401, "unauthenticated")
    assert "no keyring" in info.value.detail


def test_a_sealed_body_inside_a_seal_is_refused():
    inner = seal()
    obj = msgpack.unpackb(inner, raw=False)
    binding = security.Binding(1, CLUSTER, "model", N1, N2, int(NOW * 1000))
    nonce = security.new_nonce()
    ct = security.seal(RING.primary, nonce, inner, binding)
    outer = msgpack.packb({**obj, "nonce": nonce, "ct": ct}, use_bin_type=True)
    expect(401, "unauthenticated", outer)


def test_peer_codec_plain_and_sealed():
    plain = PeerCodec(CLUSTER, N2)
    assert not plain.sealed
    assert plain.encode(model(), to=N1, now=NOW) == wire.encode(model(), cluster=CLUSTER)
    sender = PeerCodec(CLUSTER, N1, keyring=RING)
    receiver = PeerCodec(CLUSTER, N2, keyring=RING, expected_arch=ARCH, expected_params=8)
    body = sender.encode(model(), to=N2, now=NOW)
    assert equal(receiver.decode(body, now=NOW), model())
    with pytest.raises(WireError) as info:
        receiver.decode(body, now=NOW)
    assert info.value.code == "replayed"
    with pytest.raises(WireError) as info:
        plain.decode(body, now=NOW)
    assert info.value.code == "unauthenticated"
    with pytest.raises(WireError) as info:
        receiver.decode(plain.encode(model(), to=N2, now=NOW), now=NOW)
    assert info.value.code == "unauthenticated"


def test_reload_swaps_keys_and_keeps_the_replay_memory():
    receiver = PeerCodec(CLUSTER, N2, keyring=Keyring.parse(A))
    body = seal()
    receiver.decode(body, now=NOW)
    receiver.reload(Keyring.parse(f"{A}\n{B}"))
    with pytest.raises(WireError) as info:
        receiver.decode(body, now=NOW)
    assert info.value.code == "replayed"
    receiver.reload(Keyring.parse(B))
    with pytest.raises(WireError) as info:
        receiver.decode(seal(), now=NOW)  # sealed with A, which was removed
    assert info.value.code == "unauthenticated" and security.key_id(bytes([1]) * 32).hex() in info.value.detail


# ------------------------------------------------------------------- tampering


def test_wrong_receiver_and_readdressed_messages():
    body = seal(to=N2)
    err = expect(401, "unauthenticated", body, address=N3)
    assert N2 in err.detail and N3 in err.detail
    err = expect(401, "unauthenticated", edit(body, to=N3), address=N3)  # moved to N3: the seal says N2
    assert "does not verify" in err.detail


def test_wrong_cluster():
    body = seal()
    err = expect(401, "unauthenticated", body, cluster="other")
    assert "'lab'" in err.detail and "other" not in err.detail  # never tells an outsider our cluster
    expect(401, "unauthenticated", edit(body, cluster="other"), cluster="other")
    expect(401, "unauthenticated", seal(cluster="other"))


@pytest.mark.parametrize("field, value", [("inner", "shuffle_request"), ("inner", "shuffle_reply"),
                                          ("sender", N3), ("ts", int(NOW * 1000) + 1)])
def test_edited_clear_fields_break_the_seal(field, value):
    body = seal(MESSAGES[0])
    assert equal(open_(edit(body)), MESSAGES[0])  # re-packing alone changes nothing
    err = expect(401, "unauthenticated", edit(body, **{field: value}))
    assert "does not verify" in err.detail


def test_version_is_checked_before_the_seal():
    err = expect(400, "unsupported_version", edit(seal(), v=2))  # version 2 is for model bodies only
    assert err.to_json()["supported"] == [1, 2]
    expect(400, "unsupported_version", edit(seal(), v=3))


def test_unknown_key_id():
    body = seal(ring=Keyring.parse(C))
    err = expect(401, "unauthenticated", body, ring=Keyring.parse(f"{A}\n{B}"))
    assert security.key_id(bytes([3]) * 32).hex() in err.detail
    # Relabelled with a key id the receiver holds: the wrong key, so the tag fails.
    err = expect(401, "unauthenticated", edit(body, kid=RING.primary.id))
    assert "does not verify" in err.detail
    expect(401, "unauthenticated", edit(body, kid=b"\x00" * 3))
    expect(401, "unauthenticated", edit(body, nonce=b"\x00" * 11))


def test_every_flipped_byte_is_refused():
    body = seal(MESSAGES[1])
    obj = msgpack.unpackb(body, raw=False)
    ct_start = len(body) - len(obj["ct"])
    codes = {}
    for pos in range(len(body)):
        flipped = bytearray(body)
        flipped[pos] ^= 0x01
        with pytest.raises(WireError) as info:
            open_(bytes(flipped))
        assert 400 <= info.value.status < 500
        codes[pos] = info.value.code
    assert all(codes[pos] == "unauthenticated" for pos in range(ct_start, len(body)))


def test_truncated():
    body = seal(MESSAGES[2])
    for n in range(len(body)):
        expect(400, "truncated", body[:n])


def test_stale_and_from_the_future():
    body = seal(now=NOW)
    err = expect(401, "stale", body, now=NOW + 120)
    assert "120.0 s old" in err.detail
    expect(401, "stale", body, now=NOW - 61)
    open_(body, now=NOW + 59)
    expect(401, "stale", seal(now=NOW), guard=ReplayGuard(window=5), now=NOW + 6)


def test_replayed():
    guard = ReplayGuard()
    body = seal()
    open_(body, guard=guard)
    expect(401, "replayed", body, guard=guard)
    expect(401, "replayed", body, guard=guard, now=NOW + 30)


def test_forgeries_are_not_remembered():
    guard = ReplayGuard()
    body = seal()
    obj = msgpack.unpackb(body, raw=False)
    forged = edit(body, ct=b"\x00" * len(obj["ct"]))
    expect(401, "unauthenticated", forged, guard=guard)
    assert guard.entries == 0
    open_(body, guard=guard)  # the genuine message with the same nonce still opens
    assert guard.entries == 1


def test_body_that_disagrees_with_its_envelope():
    # Only a key holder can make one; still refused.
    for envelope_type, body_message in [("shuffle_request", MESSAGES[0]), ("model", model(sender=N3))]:
        inner = wire.encode(body_message, cluster=CLUSTER)
        binding = security.Binding(1, CLUSTER, envelope_type, N1, N2, int(NOW * 1000))
        nonce = security.new_nonce()
        forged = edit(seal(), inner=envelope_type, nonce=nonce,
                      ct=security.seal(RING.primary, nonce, inner, binding))
        err = expect(401, "unauthenticated", forged)
        assert "disagrees with its envelope" in err.detail


@pytest.mark.parametrize(
    "over, status, code",
    [
        ({"kid": "x" * 8}, 400, "bad_field"),
        ({"nonce": None}, 400, "bad_field"),
        ({"ts": 1.5}, 400, "bad_field"),
        ({"ts": "now"}, 400, "bad_field"),
        ({"inner": "sealed"}, 400, "unknown_type"),
        ({"inner": 1}, 400, "bad_field"),
        ({"to": ""}, 400, "bad_field"),
        ({"sender": 5}, 400, "bad_sender"),
        ({"ct": "text"}, 400, "bad_field"),
        ({"params": {"data": b"x"}}, 400, "bad_field"),  # ct and params.data in one body
    ],
)
def test_malformed_envelopes(over, status, code):
    expect(status, code, edit(seal(), **over))


@pytest.mark.parametrize("field", ["cluster", "sender", "to", "inner", "ts", "kid", "nonce", "ct"])
def test_missing_envelope_fields(field):
    obj = msgpack.unpackb(seal(), raw=False)
    del obj[field]
    err = expect(400, "missing_field", msgpack.packb(obj, use_bin_type=True))
    assert field in err.detail


def test_size_limit_applies_before_anything_else():
    body = seal(model(1000))
    expect(413, "too_large", body, max_bytes=len(body) - 1)
    expect(413, "too_large", seal(model(wire.HEADER_SLACK // 4 + 1100)), expected_params=1000)


@SEEDED
@given(which=st.sampled_from([bytes(seal(m, now=NOW)) for m in MESSAGES]), edits=EDITS)
def test_mutated_sealed_messages_only_raise_wire_error(which, edits):
    body = mutate(which, edits)
    if body == which:
        return
    with pytest.raises(WireError) as info:
        open_(body, expected_arch=ARCH, expected_params=8, max_bytes=4096)
    assert 400 <= info.value.status < 500


# -------------------------------------------------------------------- rotation


def test_rotation_sequence_every_neighbouring_step_interoperates():
    """install B second -> move B first -> remove A: nodes one step apart always talk both ways."""
    steps = [Keyring.parse(t) for t in (A, f"{A}\n{B}", f"{B}\n{A}", B)]
    for i in range(len(steps) - 1):
        for x, y in ((steps[i], steps[i + 1]), (steps[i + 1], steps[i])):
            for message in MESSAGES:
                got = open_(seal(message, ring=x), ring=y)
                assert equal(got, message)
    # Skipping a reload breaks it: a node still on [A] cannot open what [B, A] seals.
    expect(401, "unauthenticated", seal(ring=steps[2]), ring=steps[0])


def test_a_sealed_v2_body_opens_under_its_codec_and_partitions():
    from gossipd.core import codec
    from gossipd.core.messages import Parts

    values = codec.roundtrip("int8", np.random.default_rng(1).standard_normal(7).astype(np.float32))
    cut = ModelMessage(N1, ARCH, 4.0, values, None, "int8", Parts(2, (1,), (3.0,)))  # partition 1 of 14 values
    opened = open_(seal(cut), expected_params=14, expected_partitions=2)
    assert (opened.codec, opened.parts) == ("int8", cut.parts)
    assert np.array_equal(opened.params, values)
    expect(409, "wrong_partitions", seal(cut), expected_params=14, expected_partitions=4)

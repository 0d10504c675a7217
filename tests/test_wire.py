"""Wire format v1 (and version 2's coded statistics): round trips, zero-copy decode and every rejection.

Hypothesis runs derandomized (a fixed seed per test), so failures reproduce.
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

sys.path.insert(0, str(Path(__file__).parent))

from mutations import EDITS, mutate  # noqa: E402

from gossipd import wire  # noqa: E402
from gossipd.core import codec as codecs  # noqa: E402
from gossipd.core.messages import ModelMessage, Parts, PeerDescriptor, ShuffleReply, ShuffleRequest  # noqa: E402
from gossipd.core.partition import Layout  # noqa: E402
from gossipd.core.scaling import FeatureStats  # noqa: E402
from gossipd.wire import WireError, decode, encode  # noqa: E402

CLUSTER = "test-cluster"
ARCH = "mlp-3f2a9c"
SENDER = "http://10.0.0.1:7070"
SEEDED = settings(derandomize=True, deadline=None, max_examples=150)
DELETE = object()


# ----------------------------------------------------------------------- helpers


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def model_dict(n: int = 8, **over) -> dict:
    """A valid model message as a plain dict, in a foreign (non-aligned) key order."""
    params = {"dtype": "<f4", "shape": [n], "data": np.arange(n, dtype="<f4").tobytes()}
    d = {"v": 1, "type": "model", "cluster": CLUSTER, "sender": SENDER, "arch": ARCH, "age": 5.0, "params": params}
    for key, value in over.items():
        target, name = (params, key[len("params_") :]) if key.startswith("params_") else (d, key)
        if value is DELETE:
            del target[name]
        else:
            target[name] = value
    return d


def shuffle_dict(entries=None, **over) -> dict:
    d = {
        "v": 1,
        "type": "shuffle_request",
        "cluster": CLUSTER,
        "sender": SENDER,
        "entries": [["http://10.0.0.2:7070", 0], ["http://10.0.0.3:7070", 4]] if entries is None else entries,
    }
    if entries is DELETE:
        del d["entries"]
    for key, value in over.items():
        if value is DELETE:
            del d[key]
        else:
            d[key] = value
    return d


def expect(body: bytes, status: int, code: str, **kw) -> WireError:
    kw.setdefault("cluster", CLUSTER)
    with pytest.raises(WireError) as info:
        decode(body, **kw)
    err = info.value
    assert (err.status, err.code) == (status, code), repr(err)
    assert err.to_json()["error"] == code and err.to_json()["detail"] == err.detail
    assert err.detail and err.detail[0].isalpha()
    return err


def model(n: int = 16, age: float = 3.0, seed: int = 0) -> ModelMessage:
    params = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    return ModelMessage(sender=SENDER, arch=ARCH, age=age, params=params)


def nest_array(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


def nest_map(depth: int) -> bytes:
    return b"\x81\xa1k" * depth + b"\xc0"


# -------------------------------------------------------------------- round trips

addresses = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=256
).filter(str.isprintable)
finite_f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@SEEDED
@given(
    params=hnp.arrays(np.float32, st.integers(0, 300), elements=finite_f32),
    age=st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    sender=addresses,
    arch=st.text(max_size=200),
    cluster=st.text(max_size=100),
)
def test_model_round_trip(params, age, sender, arch, cluster):
    msg = ModelMessage(sender=sender, arch=arch, age=age, params=params)
    body = encode(msg, cluster=cluster)
    assert len(body) == wire.encoded_size(msg, cluster) == wire.encoded_model_size(params.size, sender, arch, cluster)
    got = decode(body, cluster=cluster, expected_arch=arch, expected_params=params.size)
    assert isinstance(got, ModelMessage)
    assert (got.sender, got.arch, got.age) == (sender, arch, age)
    assert got.params.dtype == np.dtype("<f4") and got.params.shape == params.shape
    assert got.params.tobytes() == params.tobytes()  # bit-exact, -0.0 included


entries_st = st.lists(st.tuples(addresses, st.integers(0, 2**40)), max_size=wire.MAX_ENTRIES)


@SEEDED
@given(entries=entries_st, sender=addresses, reply=st.booleans())
def test_shuffle_round_trip(entries, sender, reply):
    cls = ShuffleReply if reply else ShuffleRequest
    msg = cls(sender=sender, entries=tuple(PeerDescriptor(a, g) for a, g in entries))
    body = encode(msg, cluster=CLUSTER)
    assert len(body) == wire.encoded_size(msg, CLUSTER)
    assert decode(body, cluster=CLUSTER) == msg


def test_model_decode_is_zero_copy_aligned_and_read_only():
    msg = model(1000)
    body = encode(msg, cluster=CLUSTER)
    got = decode(body, cluster=CLUSTER)
    assert got.params.base is body
    assert np.shares_memory(got.params, np.frombuffer(body, dtype=np.uint8))
    assert got.params.flags.aligned and not got.params.flags.writeable
    with pytest.raises(ValueError):
        got.params[0] = 1.0


@pytest.mark.parametrize("n", range(0, 12))
@pytest.mark.parametrize("sender", ["http://a", "http://ab", "http://abc", "http://abcd"])
def test_encoder_aligns_payload_for_any_header_length(n, sender):
    msg = ModelMessage(sender=sender, arch="x" * n, age=1.0, params=np.ones(n * 70, np.float32))
    body = encode(msg, cluster=CLUSTER)
    assert (len(body) - 4 * n * 70) % 4 == 0
    assert msgpack.unpackb(body)["params"]["shape"] == [n * 70]  # still plain msgpack
    assert decode(body, cluster=CLUSTER).params.flags.aligned


def test_encode_converts_non_float32_and_non_contiguous_params():
    params = np.arange(20, dtype=np.float64)[::2]
    body = encode(ModelMessage(SENDER, ARCH, 1.0, params), cluster=CLUSTER)
    assert np.array_equal(decode(body, cluster=CLUSTER).params, params.astype(np.float32))
    with pytest.raises(ValueError):
        encode(ModelMessage(SENDER, ARCH, 1.0, np.ones((2, 2), np.float32)), cluster=CLUSTER)
    with pytest.raises(TypeError):
        encode(PeerDescriptor("x", 1), cluster=CLUSTER)  # type: ignore[arg-type]


def test_foreign_encoding_is_accepted_and_copied_when_misaligned():
    # Plain msgpack.packb, keys in another order, minimal headers: valid v1.
    for pad in range(4):
        d = model_dict(n=33, padding="x" * pad)
        body = pack(d)
        got = decode(body, cluster=CLUSTER, expected_arch=ARCH, expected_params=33)
        assert np.array_equal(got.params, np.arange(33, dtype=np.float32))
        assert got.params.flags.aligned and not got.params.flags.writeable


def test_decode_accepts_bytearray_and_memoryview():
    body = encode(model(10), cluster=CLUSTER)
    for b in (bytearray(body), memoryview(body)):
        assert np.array_equal(decode(b, cluster=CLUSTER).params, model(10).params)


def test_extra_unknown_fields_are_ignored():
    d = model_dict(future={"nested": [1, 2, {"x": b"\x00" * 10}]}, note="hi")
    d["params"]["order"] = "C"
    assert isinstance(decode(pack(d), cluster=CLUSTER), ModelMessage)
    assert isinstance(decode(pack(shuffle_dict(hint=[1.5, None, True])), cluster=CLUSTER), ShuffleRequest)


def test_int_age_is_accepted_as_float():
    got = decode(pack(model_dict(age=7)), cluster=CLUSTER)
    assert got.age == 7.0 and isinstance(got.age, float)


def test_sizes():
    msg = model(1234)
    assert wire.encoded_size(msg, CLUSTER) == len(encode(msg, cluster=CLUSTER))
    assert wire.max_body_bytes(1234) >= len(encode(msg, cluster=CLUSTER))
    big = ShuffleReply("h" * 256, tuple(PeerDescriptor("a" * 256, 2**40) for _ in range(wire.MAX_ENTRIES)))
    assert len(encode(big, cluster="c" * 256)) < wire.max_body_bytes(0)
    assert decode(encode(big, cluster="c"), cluster="c", max_bytes=wire.max_body_bytes(0)) == big


# ------------------------------------------- version 2: statistics under the message's codec

STATS = FeatureStats.of(np.random.default_rng(2).standard_normal((9, 40)) * np.repeat([300.0, 0.01], 20) + 5)


@pytest.mark.parametrize("with_parts", [False, True])
@pytest.mark.parametrize("with_stats", [False, True])
@pytest.mark.parametrize("name", codecs.CODECS)
def test_model_sizes_are_exact_and_statistics_decode_as_sent(name, with_stats, with_parts):
    n, parts = 100, Parts(4, (0, 3), (1.0, 2.0)) if with_parts else None
    m = Layout(n, 4).size_of(parts.index) if parts else n
    stats = codecs.roundtrip_stats(name, STATS) if with_stats else None  # as a node sends them
    msg = ModelMessage(SENDER, ARCH, 2.0, codecs.roundtrip(name, model(m).params), stats, name, parts)
    body = encode(msg, cluster=CLUSTER)
    assert len(body) == wire.encoded_size(msg, CLUSTER) == wire.encoded_model_size(
        m, SENDER, ARCH, CLUSTER, STATS.size if with_stats else 0, codec=name, parts=2 if parts else 0, partitions=4)
    got = decode(body, cluster=CLUSTER, expected_stats=STATS.size if with_stats else None, expected_partitions=4)
    assert got.params.tobytes() == msg.params.tobytes() and (got.stats is None) == (stats is None)
    if stats is not None and name != "fp32":  # exactly what the simulator's message holds
        assert got.stats.equals(stats)
    elif stats is not None:  # float32 on the wire, the simulator keeps float64 (as before version 2)
        np.testing.assert_allclose(got.stats.var, stats.var, rtol=1e-6)


def test_whole_fp32_statistics_stay_version_1_float32_means_and_variances():
    body = encode(ModelMessage(SENDER, ARCH, 2.0, model(8).params, STATS), cluster=CLUSTER)
    raw = msgpack.unpackb(body)
    assert raw["v"] == 1 and sorted(raw["stats"]) == ["count", "mean", "var"]
    assert raw["stats"]["var"] == STATS.var.astype("<f4").tobytes()
    assert raw["stats"]["mean"] == STATS.mean.astype("<f4").tobytes()


def coded_stats_body(**stats) -> bytes:
    """An int8 model whose statistics (fp16 ``mean`` and ``std``) are replaced by ``stats``."""
    body = encode(ModelMessage(SENDER, ARCH, 2.0, np.zeros(4, np.float32), FeatureStats(3.0, [1.0], [4.0]),
                               "int8"), cluster=CLUSTER)
    raw = msgpack.unpackb(body)
    raw["stats"].update(stats)
    return pack({key: {k: v for k, v in value.items() if v is not DELETE} if key == "stats" else value
                 for key, value in raw.items()})


def f16(*values: float) -> bytes:
    return np.array(values, "<f2").tobytes()


@pytest.mark.parametrize(("stats", "code", "fragment"), [
    ({"std": f16(-1.0)}, "bad_stats", "std >= 0"),
    ({"std": f16(np.inf)}, "bad_stats", "finite"),
    ({"mean": f16(np.nan)}, "bad_stats", "finite"),
    ({"std": f16(1.0, 2.0)}, "bad_stats", "one length"),
    ({"mean": b"\0" * 3, "std": b"\0" * 3}, "bad_stats", "fp16 vectors"),
    ({"mean": f16(1.0, 2.0), "std": f16(1.0, 2.0)}, "bad_stats", "2 columns, this node expects 1"),
    ({"std": DELETE, "var": f16(1.0)}, "missing_field", "stats.std"),
])
def test_malformed_coded_statistics_are_refused(stats, code, fragment):
    assert decode(coded_stats_body(), cluster=CLUSTER, expected_stats=1).stats.var.tolist() == [4.0]
    err = expect(coded_stats_body(**stats), 400, code, expected_stats=1)
    assert fragment in err.detail


# -------------------------------------------------------------------- rejections


def test_too_large():
    body = encode(model(100), cluster=CLUSTER)
    expect(body, 413, "too_large", max_bytes=len(body) - 1)
    decode(body, cluster=CLUSTER, max_bytes=len(body))
    # default limit derived from expected_params
    huge = encode(model(wire.HEADER_SLACK // 4 + 200), cluster=CLUSTER)
    expect(huge, 413, "too_large", expected_params=100)


@pytest.mark.parametrize(
    "body, code",
    [
        (b"", "truncated"),
        (b"\xc1", "not_msgpack"),
        (b"\x81\xa1a\xc1", "not_msgpack"),
        (b"hello world", "not_a_map"),
        (b"\x00", "not_a_map"),
        (b"\xc0", "not_a_map"),
        (b"\x92\x01\x02", "not_a_map"),
        (b"\xa3abc", "not_a_map"),
        (b"\xff" * 64, "not_a_map"),
        (b"\x80\x00", "trailing_data"),
        (b"\x81\xa1a\xa3\xff\xfe\xfd", "not_msgpack"),  # invalid UTF-8
        (b"\x81\x01\x02", "bad_field"),  # int map key
        (b"\x81\x91\x01\x02", "bad_field"),  # array as map key
        (b"\x81\xa1a\xd6\xff\x00\x00", "truncated"),  # timestamp ext cut short
        (b"\x81\xa1a\xd5\xff\x00\x00", "not_msgpack"),  # timestamp ext of bad length
        (b"\x81\xa1a\xdd\xff\xff\xff\xff", "too_many_items"),
        (b"\xdf\xff\xff\xff\xff", "too_many_items"),
        (b"\x81\xa1a\xdb\xff\xff\xff\xff", "too_long"),
        (b"\x81\xa1a\xc6\xff\xff\xff\xff", "too_long"),
        (b"\x81\xa1a\xc9\x00\x01\x00\x00\x05", "too_long"),
    ],
)
def test_garbage(body, code):
    expect(body, 400, code)


def test_every_prefix_of_a_valid_message_is_truncated():
    for msg in (model(5), ShuffleRequest(SENDER, (PeerDescriptor("http://b", 1),))):
        body = encode(msg, cluster=CLUSTER)
        decode(body, cluster=CLUSTER)
        for i in range(len(body)):
            expect(body[:i], 400, "truncated")


@pytest.mark.parametrize("depth", [9, 100, 10_000])
def test_deep_nesting(depth):
    expect(b"\x81\xa1k" + nest_array(depth), 400, "too_deep")
    expect(nest_map(depth), 400, "too_deep")
    # nested where a real field is expected
    expect(pack(model_dict(params={})).replace(b"\x80", nest_map(depth)), 400, "too_deep")


def test_moderate_nesting_in_unknown_field_is_fine():
    body = b"\x88" + pack(model_dict())[1:] + b"\xa5extra" + nest_array(wire.MAX_DEPTH - 1)
    assert isinstance(decode(body, cluster=CLUSTER), ModelMessage)


def test_too_many_items():
    wide = pack({"a": list(range(wire.MAX_ITEMS))})
    expect(wide, 400, "too_many_items")
    many_keys = pack({f"k{i}": i for i in range(wire.MAX_ITEMS // 2 + 1)})
    expect(many_keys, 400, "too_many_items")


def test_long_strings():
    expect(pack(model_dict(note="x" * (wire.MAX_STR_LEN + 1))), 400, "too_long")
    expect(pack(model_dict(blob=b"x" * (wire.MAX_STR_LEN + 1))), 400, "too_long")


@pytest.mark.parametrize("field", ["v", "type", "cluster", "sender", "arch", "age", "params", "params_dtype", "params_shape", "params_data"])
def test_missing_model_field(field):
    err = expect(pack(model_dict(**{field: DELETE})), 400, "missing_field")
    assert field.replace("params_", "params.") in err.detail


@pytest.mark.parametrize("field", ["v", "type", "cluster", "sender", "entries"])
def test_missing_shuffle_field(field):
    err = expect(pack(shuffle_dict(**{field: DELETE})), 400, "missing_field")
    assert field in err.detail


@pytest.mark.parametrize(
    "over",
    [
        {"v": "1"},
        {"v": 1.0},
        {"v": True},
        {"type": 1},
        {"cluster": None},
        {"cluster": b"test-cluster"},
        {"arch": 1},
        {"age": "5"},
        {"age": True},
        {"age": None},
        {"params": [1, 2]},
        {"params": b"\x00\x00\x80\x3f"},
        {"params_dtype": 4},
        {"params_shape": "8"},
        {"params_shape": 8},
        {"params_data": "x" * 32},
        {"params_data": None},
        {"params_data": list(range(8))},
    ],
)
def test_bad_model_field_types(over):
    err = expect(pack(model_dict(**over)), 400, "bad_field")
    name = next(iter(over)).replace("params_", "params.")
    assert name in err.detail


def test_bad_shuffle_field_types():
    expect(pack(shuffle_dict(entries={"a": 1})), 400, "bad_field")
    expect(pack(shuffle_dict(entries="x")), 400, "bad_field")


@pytest.mark.parametrize("v", [0, 3, 99, -1, 2**40])
def test_unsupported_version(v):
    err = expect(pack(model_dict(v=v)), 400, "unsupported_version")
    assert err.to_json()["supported"] == [1, 2]
    assert "1, 2" in err.detail and str(v) in err.detail


def test_unsupported_version_wins_over_everything_else():
    # A v3 message may look entirely different; report the version, not its fields.
    expect(pack({"v": 3, "kind": "whatever"}), 400, "unsupported_version")


def test_unknown_type():
    err = expect(pack(model_dict(type="gossip")), 400, "unknown_type")
    assert "gossip" in err.detail and "model" in err.detail


def test_wrong_cluster():
    err = expect(pack(model_dict(cluster="other")), 409, "wrong_cluster")
    assert "other" in err.detail and CLUSTER in err.detail
    expect(encode(ShuffleReply(SENDER, ()), cluster="other"), 409, "wrong_cluster")


def test_wrong_arch():
    err = expect(pack(model_dict(arch="cnn-000")), 409, "wrong_arch", expected_arch=ARCH)
    assert "cnn-000" in err.detail and ARCH in err.detail
    decode(pack(model_dict(arch="cnn-000")), cluster=CLUSTER)  # no expectation, no check


@pytest.mark.parametrize(
    "dtype, data",
    [
        ("<f8", np.arange(8, dtype="<f8").tobytes()),
        ("|O", b"\x00" * 64),
        (">f4", np.arange(8, dtype=">f4").tobytes()),
        ("<f2", np.arange(8, dtype="<f2").tobytes()),
        ("<i4", np.arange(8, dtype="<i4").tobytes()),
        ("float32", np.arange(8, dtype="<f4").tobytes()),
    ],
)
def test_bad_dtype(dtype, data):
    err = expect(pack(model_dict(params_dtype=dtype, params_data=data)), 400, "bad_dtype")
    assert "<f4" in err.detail


@pytest.mark.parametrize(
    "shape",
    [[9], [7], [8, 1], [2, 4], [], [-8], ["8"], [True], [8.0], [2**63]],
)
def test_bad_shape(shape):
    expect(pack(model_dict(params_shape=shape)), 400, "bad_shape")


def test_shape_must_match_expected_params():
    body = encode(model(16), cluster=CLUSTER)
    err = expect(body, 400, "bad_shape", expected_params=17)
    assert "16" in err.detail and "17" in err.detail


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 500, 999])
def test_non_finite_params(bad, where):
    msg = model(1000)
    params = msg.params.copy()
    params[where] = bad
    body = encode(ModelMessage(SENDER, ARCH, 1.0, params), cluster=CLUSTER)
    err = expect(body, 400, "non_finite")
    assert "1 non-finite" in err.detail


@pytest.mark.parametrize("age", [-1.0, -1e-300, -1, float("nan"), float("inf"), float("-inf")])
def test_bad_age(age):
    expect(pack(model_dict(age=age)), 400, "bad_age")
    body = encode(ModelMessage(SENDER, ARCH, age, np.ones(4, np.float32)), cluster=CLUSTER)
    expect(body, 400, "bad_age")


@pytest.mark.parametrize("sender", [7, None, b"http://x", "", "h" * (wire.MAX_ADDRESS_LEN + 1), "http://x\n", "a\x00b"])
def test_bad_sender(sender):
    expect(pack(model_dict(sender=sender)), 400, "bad_sender")
    expect(pack(shuffle_dict(sender=sender)), 400, "bad_sender")


@pytest.mark.parametrize(
    "entries",
    [
        [["http://x", 0]] * (wire.MAX_ENTRIES + 1),
        ["http://x"],
        [["http://x"]],
        [["http://x", 0, 0]],
        [{"address": "http://x", "age": 0}],
        [[7, 0]],
        [["", 0]],
        [["a" * (wire.MAX_ADDRESS_LEN + 1), 0]],
        [["http://x", -1]],
        [["http://x", 1.5]],
        [["http://x", True]],
        [["http://x", None]],
        [["http://x", 1], ["http://y", "2"]],
    ],
)
def test_bad_entries(entries):
    expect(pack(shuffle_dict(entries=entries)), 400, "bad_entries")


def test_duplicate_keys_follow_msgpack_last_wins():
    first = pack({"dtype": "<f4", "shape": [8], "data": b"\x00" * 5})[1:]
    second = pack({"dtype": "<f4", "shape": [8], "data": np.ones(8, "<f4").tobytes()})[1:]
    head = pack(model_dict(params=DELETE))
    n_keys = head[0] & 0x0F
    # params appears twice: the second (valid) one counts
    body = bytes([0x80 | (n_keys + 2)]) + head[1:] + b"\xa6params\x83" + first + b"\xa6params\x83" + second
    assert np.array_equal(decode(body, cluster=CLUSTER).params, np.ones(8, np.float32))
    # and the other way round: the last one is broken
    body = bytes([0x80 | (n_keys + 2)]) + head[1:] + b"\xa6params\x83" + second + b"\xa6params\x83" + first
    expect(body, 400, "bad_shape")
    # params.data twice, the last one not binary
    inner = pack({"dtype": "<f4", "shape": [8], "data": np.ones(8, "<f4").tobytes()})[1:] + b"\xa4data\xc0"
    body = bytes([0x80 | (n_keys + 1)]) + head[1:] + b"\xa6params\x84" + inner
    expect(body, 400, "bad_field")


def test_wire_error_json():
    err = WireError(409, "wrong_cluster", "message is for cluster 'a'")
    assert err.to_json() == {"error": "wrong_cluster", "detail": "message is for cluster 'a'"}
    assert err.status == 409 and "wrong_cluster" in str(err)


# -------------------------------------------------------------------------- fuzz


def _decode_or_wire_error(body: bytes) -> None:
    try:
        decode(body, cluster=CLUSTER, expected_arch=ARCH, expected_params=8, max_bytes=4096)
    except WireError as err:
        assert 400 <= err.status < 500 and err.code and err.detail


@SEEDED
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_wire_error(body):
    _decode_or_wire_error(body)


@SEEDED
@given(st.binary(min_size=1, max_size=64), st.sampled_from([b"\x87", b"\x81\xa1a", b"\x85", b"\xde\x00\x03"]))
def test_random_bytes_after_a_map_header_only_raise_wire_error(tail, head):
    _decode_or_wire_error(head + tail)


_VALID = [
    encode(model(8), cluster=CLUSTER),
    encode(ShuffleReply(SENDER, (PeerDescriptor("http://b", 1), PeerDescriptor("http://c", 2))), cluster=CLUSTER),
]


@SEEDED
@given(which=st.sampled_from(_VALID), edits=EDITS)
def test_mutated_valid_messages_only_raise_wire_error(which, edits):
    _decode_or_wire_error(mutate(which, edits))


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=30,
)
fields = st.sampled_from(["v", "type", "cluster", "sender", "arch", "age", "params", "entries", "dtype", "shape", "data"])


@SEEDED
@given(st.dictionaries(fields, msgpack_values, max_size=8), st.booleans())
def test_random_msgpack_maps_only_raise_wire_error(d, shuffle):
    base = shuffle_dict() if shuffle else model_dict()
    base.update(d)
    _decode_or_wire_error(pack(base))
    _decode_or_wire_error(pack(d))


@SEEDED
@given(st.sampled_from(["dtype", "shape", "data"]), msgpack_values)
def test_random_params_fields_only_raise_wire_error(key, value):
    _decode_or_wire_error(pack(model_dict(**{f"params_{key}": value})))


def test_struct_sanity():
    # the header the encoder writes for age is a float64
    body = encode(model(4, age=2.5), cluster=CLUSTER)
    assert b"\xa3age\xcb" + struct.pack(">d", 2.5) in body
    assert math.isfinite(decode(body, cluster=CLUSTER).age)

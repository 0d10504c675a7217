"""Codecs (fp32 | fp16 | int8): the documented error bounds, idempotence, sizes, hostile bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gossipd.core import codec

finite32 = st.floats(min_value=-2.0**100, max_value=2.0**100, allow_nan=False, allow_infinity=False, width=32)
vectors = arrays(np.float32, st.integers(0, 200), elements=finite32)


@settings(max_examples=150, deadline=None)
@given(vectors, st.sampled_from(codec.CODECS))
def test_roundtrip_within_the_documented_bound_and_idempotent(x: np.ndarray, name: str) -> None:
    if name == "fp16":
        x = np.clip(x, -codec.FP16_MAX, codec.FP16_MAX)  # beyond: saturation, documented separately
    y = codec.roundtrip(name, x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert (np.abs(y.astype(np.float64) - x) <= codec.error_bound(name, x)).all()
    assert np.array_equal(codec.roundtrip(name, y), y)  # a round-tripped message loses nothing more
    data = codec.encode(name, x)
    assert len(data) == codec.payload_size(name, x.size)
    assert np.array_equal(codec.decode(name, x.size, bytes(data)), y)


def test_int8_bound_is_relative_to_each_block() -> None:
    x = np.concatenate([np.full(32, 1000.0), np.linspace(-1e-3, 1e-3, 32)]).astype(np.float32)
    y = codec.roundtrip("int8", x)
    # The small block is not drowned by the large one: its error is under 1/127 of its own largest value.
    assert np.abs(y[32:] - x[32:]).max() < 1e-3 / 127
    assert np.abs(y[:32] - x[:32]).max() == 0.0  # 1000 = 125 * 2**3: exact
    assert codec.payload_size("int8", 64) == 64 + 2
    assert np.array_equal(codec.roundtrip("int8", np.zeros(5, np.float32)), np.zeros(5))


def test_fp16_saturates_instead_of_overflowing() -> None:
    y = codec.roundtrip("fp16", np.array([1e6, -1e6, 1.0], np.float32))
    assert y.tolist() == [65504.0, -65504.0, 1.0]


def test_fp32_is_exact_and_a_view() -> None:
    x = np.arange(10, dtype=np.float32)
    assert codec.roundtrip("fp32", x) is x
    data = bytes(codec.encode("fp32", x))
    out = codec.decode("fp32", 10, data)
    assert np.array_equal(out, x) and not out.flags.writeable


@pytest.mark.parametrize("name, n, data, message", [
    ("fp32", 3, b"\0" * 11, "12 bytes"),
    ("fp16", 3, b"\0" * 7, "6 bytes"),
    ("int8", 40, b"\0" * 40, "42 bytes"),  # the two scale bytes are missing
    ("int8", 2, bytes([127, 0, 0x80]), "-128"),
    ("int8", 1, bytes([255, 1]), "exponent 128"),
])
def test_decode_refuses_what_does_not_fit(name: str, n: int, data: bytes, message: str) -> None:
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(name, n, data)


def test_unknown_codec_names_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="fp32, fp16, int8"):
        codec.check_codec("bf16")


@pytest.mark.parametrize("name", codec.CODECS)
def test_values_in_inverts_payload_size_and_refuses_sizes_no_count_takes(name: str) -> None:
    sizes = {codec.payload_size(name, n): n for n in range(300)}
    assert [codec.values_in(name, b) for b in range(300)] == [sizes.get(b) for b in range(300)]
    assert codec.values_in("int8", 34) is None  # 33 bytes hold 32 values, 35 hold 33: 34 is no count


# Raw columns of very different scales in one block, as network-learned statistics are: a breast cancer
# area (std 352, variance beyond fp16's range) beside a smoothness (std 0.014) and a constant column.
RAW_MEAN, RAW_STD = np.array([654.9, 0.0964, 0.0, 1.5]), np.array([351.6, 0.0141, 0.0, 2.0])


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_statistics_ride_as_fp16_means_and_stds_and_lose_nothing_more(name: str) -> None:
    from gossipd.core.scaling import FeatureStats

    stats = FeatureStats(10.0, RAW_MEAN, RAW_STD ** 2)
    sent = codec.roundtrip_stats(name, stats)
    assert codec.STATS_CODEC[name] == "fp16" and sent.count == 10.0
    # Within fp16's bound, relative to each value: a small spread survives beside a large one.
    std = np.sqrt(stats.var)
    assert (np.abs(np.sqrt(sent.var) - std) <= codec.error_bound("fp16", std)).all() and sent.var[2] == 0.0
    assert (np.abs(sent.mean - stats.mean) <= codec.error_bound("fp16", stats.mean)).all()
    assert sent.var[0] > 65504 and (sent.var >= 0).all()
    again = codec.roundtrip_stats(name, sent)  # what a receiver decodes, sent on: nothing more is lost
    assert np.array_equal(again.mean, sent.mean) and np.array_equal(again.var, sent.var)
    assert codec.roundtrip_stats("fp32", stats) is stats  # fp32: the simulator's statistics, untouched


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5), st.integers(0, 100), st.sampled_from(codec.CODECS), st.integers(0, 2**32 - 1))
def test_roundtrip_rows_is_roundtrip_of_every_row_bit_for_bit(m: int, n: int, name: str, seed: int) -> None:
    """The batched engine's pushes: one pass over many messages, each row coded as its own
    message (int8 blocks restart at every row, so a large row never coarsens its neighbour's)."""
    rng = np.random.default_rng(seed)
    rows = (rng.normal(0, 1, (m, n)) * 10.0 ** rng.integers(-6, 6, (m, 1))).astype(np.float32)
    if m and n:
        rows[0, : min(n, 40)] = 0.0  # a block of zeros is exact
    got = codec.roundtrip_rows(name, rows)
    assert got.dtype == np.float32 and got.shape == rows.shape
    for i in range(m):
        assert np.array_equal(got[i], codec.roundtrip(name, rows[i]))


@pytest.mark.parametrize("name", codec.CODECS)
def test_roundtrip_stats_rows_is_roundtrip_stats_of_every_row(name: str) -> None:
    from gossipd.core.scaling import FeatureStats

    rng = np.random.default_rng(3)
    mean = np.vstack([RAW_MEAN, rng.normal(0, 100, 4)])
    var = np.vstack([RAW_STD ** 2, rng.uniform(0, 5, 4)])
    got_mean, got_var = codec.roundtrip_stats_rows(name, mean, var)
    for i in range(2):
        one = codec.roundtrip_stats(name, FeatureStats(5.0, mean[i], var[i]))
        assert np.array_equal(got_mean[i], one.mean) and np.array_equal(got_var[i], one.var)

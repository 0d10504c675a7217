"""Codecs for the vectors of a model message on the wire: fp32 | fp16 | int8. Pure numpy.

A codec turns a float32 vector into bytes and back. A message's codec covers
its parameters and, under network-learned scaling, its scaling statistics
(:data:`STATS_CODEC`, :func:`roundtrip_stats`): every vector but the few
fixed-width header fields. The node applies the round trip (:func:`roundtrip`,
:func:`roundtrip_stats`) when it builds a push, so a message already holds
exactly the values the receiver will decode: the simulator, which hands
message objects over without encoding them, learns from the same numbers a
daemon does, and :func:`encode` of a round-tripped vector loses nothing more
(both lossy codecs are idempotent: ``encode(roundtrip(x)) == encode(x)``).

**Scaling statistics** under fp16 and int8 are two fp16 vectors: the means,
then the **standard deviations** (the receiver squares them back into
variances, so a variance is >= 0 whatever the rounding). Two vectors, not one,
so nothing mixes a mean with a spread; standard deviations, not variances,
because they are what the learner scales by, and because fp16 would saturate
a variance beyond 65504 (a standard deviation beyond 256: raw breast cancer and
wine columns) but a standard deviation only beyond 65504. int8 messages carry
them as **fp16 too** (:data:`STATS_CODEC`): the statistics describe raw
features, whose scales differ by orders of magnitude within one block of 32
(breast cancer: a standard deviation of 352 beside ones of 0.003), and a block
scale rounds the small ones to zero. Measured (100 nodes, logreg, seed 1):
int8 statistics took breast cancer from 0.954 to 0.637 and rejected 313
honest claims in the robust statistics merge, where fp16 ones lose nothing;
on digits (64 columns) they would save 124 bytes of a 1,075-byte int8 push
(0.292x of fp32's instead of 0.330x).
fp32 statistics stay the float32 means and variances of wire version 1.

``fp32``: the float32 bytes as they are (4 bytes a value, lossless; the wire
    keeps its zero-copy path).
``fp16``: IEEE half precision (2 bytes a value). Round to nearest: the error is
    at most ``2**-11 * |x|`` for ``|x| >= 2**-14`` and ``2**-25`` below; values
    beyond ``±65504`` saturate to ``±65504`` (the built-in models' weights stay
    far below; the node accepts up to ``max_param_abs``, 1e6, so a model that
    grows weights that large must use fp32 or int8).
``int8``: block-wise scaled integers, as OCP Microscaling's MXINT8: blocks of
    :data:`BLOCK` (32) values share one scale ``s = 2**e``, stored as the byte
    ``e + 127`` (E8M0), the smallest power of two with ``max|x_b| <= 127 s``; each
    value is ``round(x / s)`` in ``[-127, 127]``. 32 + 1 bytes per 32 values
    (1.03 bytes a value, 0.258 of fp32). **Error bound**: ``|x - x'| <= s / 2 <
    max|x_b| / 127`` for every value of block ``b`` (under 0.8% of the block's
    largest magnitude); a block of zeros is exact. A power-of-two scale costs at
    most one bit against a float scale ``max|x_b| / 127``, but makes the decoded
    value ``q * 2**e`` exact in float32 and the round trip idempotent, and is one
    byte instead of four. Range: ``|x| <= 127 * 2**MAX_EXPONENT`` (1.7e38), past
    which values saturate.
"""

from __future__ import annotations

import numpy as np

from gossipd.core.scaling import FeatureStats

__all__ = ["BLOCK", "CODECS", "FP16_MAX", "MAX_EXPONENT", "MIN_EXPONENT", "CodecError", "check_codec", "decode",
           "STATS_CODEC", "encode", "error_bound", "payload_size", "roundtrip", "roundtrip_rows", "roundtrip_stats",
           "roundtrip_stats_rows", "stats_from_vectors", "stats_vectors", "values_in"]

CODECS: tuple[str, ...] = ("fp32", "fp16", "int8")
#: The codec a message's scaling statistics are written under, per message codec (module doc).
STATS_CODEC: dict[str, str] = {"fp32": "fp32", "fp16": "fp16", "int8": "fp16"}
BLOCK = 32  # int8: values per shared scale (MXINT8's block)
MIN_EXPONENT = -127  # int8 scale exponents; byte = e + 127
MAX_EXPONENT = 120  # 127 * 2**120 < float32 max: a decoded value is always finite
FP16_MAX = 65504.0
_INT8_MAX = 127


class CodecError(ValueError):
    """Bytes that do not decode under their codec (the wire turns it into a 400)."""


def check_codec(name: str) -> str:
    """``name`` if it is a codec, else ValueError listing the supported ones."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {str(name)[:32]!r}; supported: {', '.join(CODECS)}")
    return name


def payload_size(codec: str, n: int) -> int:
    """Bytes of ``n`` values under ``codec`` (int8: the scale bytes and the values)."""
    if codec == "fp32":
        return 4 * n
    if codec == "fp16":
        return 2 * n
    if codec == "int8":
        return -(-n // BLOCK) + n
    raise ValueError(f"unknown codec {codec!r}")


def values_in(codec: str, nbytes: int) -> int | None:
    """The ``n`` with ``payload_size(codec, n) == nbytes``, or None if no count of values takes that many bytes."""
    if codec == "int8":  # n + ceil(n / 32): every 32 values take 33 bytes, a started block one more
        n = nbytes - -(-nbytes // (BLOCK + 1))
    else:
        n = nbytes // payload_size(codec, 1)
    return n if nbytes >= 0 and payload_size(codec, n) == nbytes else None


def roundtrip(codec: str, values: np.ndarray) -> np.ndarray:
    """What a receiver decodes from ``values`` sent under ``codec`` (float32; ``values`` itself for fp32)."""
    if codec == "fp32":
        return values
    if codec == "fp16":
        return _to_fp16(values).astype(np.float32)
    if codec == "int8":
        q, e = _int8(values)
        return _from_int8(q, e, values.shape[0])
    raise ValueError(f"unknown codec {codec!r}")


def roundtrip_rows(codec: str, rows: np.ndarray) -> np.ndarray:
    """:func:`roundtrip` of every row of the float32 matrix ``rows``, bit for bit, in one pass
    (the batched engine's pushes): each row is its own message, so int8 blocks never span rows."""
    if codec == "fp32":
        return rows
    if codec == "fp16":
        return _to_fp16(rows).astype(np.float32)
    if codec == "int8":
        m, n = rows.shape
        if n == 0:
            return rows.astype(np.float32)
        width = -(-n // BLOCK) * BLOCK
        padded = np.zeros((m, width), dtype=np.float64)
        padded[:, :n] = rows
        q, e = _int8_blocks(padded.reshape(-1, BLOCK))
        return np.ldexp(q, e[:, None]).reshape(m, width)[:, :n].astype(np.float32)
    raise ValueError(f"unknown codec {codec!r}")


def encode(codec: str, values: np.ndarray) -> memoryview | bytes:
    """The bytes of ``values`` (1-D float32) under ``codec``; fp32's are a view of ``values`` (no copy).

    int8: ``ceil(n / 32)`` scale bytes (``e + 127`` per block), then the ``n`` int8 values.
    """
    if codec == "fp32":
        return memoryview(np.ascontiguousarray(values, dtype="<f4")).cast("B")
    if codec == "fp16":
        return _to_fp16(values).astype("<f2").tobytes()
    if codec == "int8":
        q, e = _int8(values)
        return b"".join(((e + 127).astype(np.uint8).tobytes(), q.tobytes()))
    raise ValueError(f"unknown codec {codec!r}")


def decode(codec: str, n: int, data: bytes | memoryview) -> np.ndarray:
    """``n`` float32 values from ``data``; CodecError if they do not fit.

    The length is checked against ``n`` before anything is allocated. fp32
    returns a read-only view of ``data`` when it is aligned (no copy).
    """
    need = payload_size(codec, n)
    if len(data) != need:
        raise CodecError(f"{codec} data of {n} values must be {need} bytes, got {len(data)}")
    if codec == "fp32":
        out = np.frombuffer(data, dtype="<f4", count=n)
        if not out.flags.aligned:
            out = out.copy()
            out.flags.writeable = False
        return out
    if codec == "fp16":
        return np.frombuffer(data, dtype="<f2", count=n).astype(np.float32)
    blocks = need - n
    e = np.frombuffer(data, dtype=np.uint8, count=blocks).astype(np.int32) - 127
    q = np.frombuffer(data, dtype=np.int8, count=n, offset=blocks)
    if blocks and int(e.max()) > MAX_EXPONENT:
        raise CodecError(f"int8 scale exponent {int(e.max())} is above {MAX_EXPONENT} (byte {MAX_EXPONENT + 127})")
    if n and (q == -128).any():
        raise CodecError("int8 values must be in [-127, 127]; -128 is not used")
    return _from_int8(q, e, n)


# -- scaling statistics ---------------------------------------------------------------


def stats_vectors(codec: str, stats: FeatureStats) -> tuple[np.ndarray, np.ndarray]:
    """The two float32 vectors a message under ``codec`` carries for ``stats`` (each written
    under ``STATS_CODEC[codec]``): (mean, var) under fp32, as wire version 1; (mean, std) else."""
    mean = stats.mean.astype(np.float32)
    if codec == "fp32":
        return mean, stats.var.astype(np.float32)
    # sqrt of a float32 value squared in float64 is that value again: round-tripped
    # statistics go out with the very bytes they came in with.
    return mean, np.sqrt(stats.var).astype(np.float32)


def stats_from_vectors(codec: str, count: float, mean: np.ndarray, spread: np.ndarray) -> FeatureStats:
    """The statistics of decoded vectors (``spread``: var under fp32, std otherwise; each >= 0)."""
    var = spread.astype(np.float64)
    if codec != "fp32":
        var = var * var  # exact: a float32 squared fits a float64's mantissa
    return FeatureStats(count, mean, var)


def roundtrip_stats(codec: str, stats: FeatureStats) -> FeatureStats:
    """What a receiver decodes from ``stats`` sent under ``codec`` (``stats`` itself for fp32:
    there the simulator keeps its float64 statistics, as it always has)."""
    if codec == "fp32":
        return stats
    mean, std = stats_vectors(codec, stats)
    under = STATS_CODEC[codec]
    return stats_from_vectors(codec, stats.count, roundtrip(under, mean), roundtrip(under, std))


def roundtrip_stats_rows(codec: str, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`roundtrip_stats` of many nodes' statistics at once (one row each), bit for bit:
    the (mean, var) a receiver decodes, as float64 (the values of the float32 ones it holds)."""
    if codec == "fp32":
        return mean, var
    under = STATS_CODEC[codec]
    m = roundtrip_rows(under, mean.astype(np.float32)).astype(np.float64)
    std = roundtrip_rows(under, np.sqrt(var).astype(np.float32)).astype(np.float64)
    return m, std * std


# -- the codecs' arithmetic -------------------------------------------------------------


def _to_fp16(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)


def _blocks(values: np.ndarray) -> np.ndarray:
    """``values`` as float64 rows of BLOCK, the last padded with zeros."""
    n = values.shape[0]
    padded = np.zeros(-(-n // BLOCK) * BLOCK, dtype=np.float64)
    padded[:n] = values
    return padded.reshape(-1, BLOCK)


def _int8(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, exponent per block) with ``max|x_b| <= 127 * 2**e_b``, e_b as small as that allows."""
    n = values.shape[0]
    if n == 0:
        return np.zeros(0, np.int8), np.zeros(0, np.int32)
    q, e = _int8_blocks(_blocks(values))
    return q.reshape(-1)[:n].astype(np.int8), e


def _int8_blocks(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 integer values, exponent) per row of BLOCK values: the int8 arithmetic itself."""
    peak = np.abs(blocks).max(axis=1)
    # frexp: peak / 127 = m * 2**k with m in [0.5, 1), so 2**k >= peak / 127 > 2**(k-1); an exact
    # power of two (m = 0.5) needs one less. Checked exactly below against rounding in the division.
    m, k = np.frexp(peak / _INT8_MAX)
    e = np.where(m == 0.5, k - 1, k).astype(np.int32)
    e = np.where(np.ldexp(float(_INT8_MAX), e) < peak, e + 1, e)
    e = np.clip(np.where(peak > 0, e, MIN_EXPONENT), MIN_EXPONENT, MAX_EXPONENT)
    q = np.clip(np.rint(np.ldexp(blocks, -e[:, None])), -_INT8_MAX, _INT8_MAX)
    return q, e


def _from_int8(q: np.ndarray, e: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(e.shape[0] * BLOCK, dtype=np.float64)
    out[:n] = q
    return np.ldexp(out.reshape(-1, BLOCK), e[:, None]).reshape(-1)[:n].astype(np.float32)


def error_bound(codec: str, values: np.ndarray) -> np.ndarray:
    """The documented bound on ``|x - roundtrip(x)|`` per value (for tests and docs)."""
    values = np.asarray(values, dtype=np.float64)
    if codec == "fp32":
        return np.zeros_like(values)
    if codec == "fp16":
        return np.maximum(np.abs(values) * 2.0 ** -11, 2.0 ** -25) + np.maximum(np.abs(values) - FP16_MAX, 0)
    _, e = _int8(values.astype(np.float32))
    per_block = np.ldexp(0.5, e)
    return np.repeat(per_block, BLOCK)[: values.shape[0]]


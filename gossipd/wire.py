"""Wire format v1 and v2: the only place bytes become messages and messages become bytes.

One msgpack map per message (never pickle)::

    {"v": 1, "type": "model", "cluster": str, "sender": str,
     "arch": str, "age": float,
     ["stats": {"count": float, "mean": <bin, k*4>, "var": <bin, k*4>},]  (network-learned scaling)
     "params": {"dtype": "<f4", "shape": [n], "data": <bin, n*4 bytes>}}

    {"v": 2, "type": "model", ... as v1 but "stats" ...,
     ["stats": {"count": float, "mean": <bin>, "std": <bin>},]  (codec fp16 or int8: both fp16;
                                                                  fp32: "mean" and "var" as in v1)
     ["parts": {"count": P, "index": <bin, k*2: <u2>, "ages": <bin, k*8: <f8>},]  (a cut model)
     "params": {"codec": "fp32" | "fp16" | "int8", "shape": [m], "data": <bin>}}

    {"v": 1, "type": "shuffle_request" | "shuffle_reply", "cluster": str,
     "sender": str, "entries": [[address, age], ...]}

A model goes out as v1 when it is whole and fp32 (the defaults), so nodes that
predate v2 keep talking to upgraded ones; a codec or partitions make it v2,
which those nodes refuse (400 ``unsupported_version``) rather than misread.

:func:`decode` treats its input as hostile. Before msgpack builds any object a
bounded, non-recursive pre-scan walks the token headers (never the payloads) and
enforces the nesting depth, the total item count, string lengths, truncation and
trailing bytes, and it finds where ``params.data`` lies in the body. That binary
is cut out and the small remainder is handed to ``msgpack.unpackb`` with every
length limit set explicitly; the parameters become ``np.frombuffer`` over the
caller's body (no copy, read-only when the body is ``bytes``). Every failure is
a :class:`WireError` carrying the HTTP status, a short code and a sentence.

See ``docs/protocol.md`` for the field-by-field description and the error table.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from gossipd.core import codec as codecs
from gossipd.core.messages import Message, ModelMessage, Parts, PeerDescriptor, ShuffleReply, ShuffleRequest
from gossipd.core.partition import MAX_PARTITIONS, part_size
from gossipd.core.scaling import FeatureStats

__all__ = [
    "ALLOWED_DTYPES",
    "HEADER_SLACK",
    "MAX_ADDRESS_LEN",
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_ITEMS",
    "MAX_STR_LEN",
    "MESSAGE_TYPES",
    "MODEL_V2",
    "PROTOCOL_VERSION",
    "SEALED",
    "SUPPORTED_VERSIONS",
    "KNOWN_TYPES",
    "MISSING",
    "Parsed",
    "WireError",
    "decode",
    "encode",
    "encoded_model_size",
    "encoded_size",
    "max_body_bytes",
    "message_type",
    "parse",
    "require_address",
    "require_field",
]

PROTOCOL_VERSION = 1  # shuffles, the sealed envelope, and whole fp32 models
MODEL_V2 = 2  # models with a codec or cut into partitions
SUPPORTED_VERSIONS: tuple[int, ...] = (1, MODEL_V2)

#: dtype strings accepted for ``params``. Only little-endian float32: the node's
#: parameters are float32, and accepting other widths would mean a silent
#: conversion (a copy, and for ``<f8`` a loss of precision) on every receive.
ALLOWED_DTYPES: frozenset[str] = frozenset({"<f4"})

MAX_DEPTH = 8  # containers nested in containers (v1 itself needs 3)
MAX_ITEMS = 1024  # msgpack objects in one message, keys included (v1 needs < 250)
MAX_STR_LEN = 1024  # bytes in any str, and in any bin or ext other than params.data
MAX_ADDRESS_LEN = 256  # characters in a sender or a shuffle entry address
MAX_ENTRIES = 64  # peer descriptors in one shuffle message
HEADER_SLACK = 64 * 1024  # bytes allowed on top of the parameters in max_body_bytes

MESSAGE_TYPES = ("model", "shuffle_request", "shuffle_reply")
#: The sealed envelope's type (``gossipd.envelope``): a v1 message whose ``ct``
#: carries one of the MESSAGE_TYPES encrypted. An older node answers it with
#: 400 ``unknown_type``; that is the version negotiation.
SEALED = "sealed"
KNOWN_TYPES = (*MESSAGE_TYPES, SEALED)

Span = tuple[int, int, int]  # (header_start, payload_start, payload_end) of a binary in a body


class WireError(Exception):
    """A received body that cannot be accepted.

    ``status`` is the HTTP status to answer with, ``code`` a stable snake_case
    slug for programs, ``detail`` a sentence for people naming what was wrong.
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.code == "unsupported_version":
            body["supported"] = list(SUPPORTED_VERSIONS)
        elif self.code == "bad_codec":
            body["supported"] = list(codecs.CODECS)
        return body

    def __repr__(self) -> str:
        return f"WireError({self.status}, {self.code!r}, {self.detail!r})"


def _bad(code: str, detail: str, status: int = 400) -> WireError:
    return WireError(status, code, detail)


# --------------------------------------------------------------------------- sizes


def max_body_bytes(n_params: int) -> int:
    """Largest body a node expecting ``n_params`` parameters should read.

    The parameters (4 bytes each) plus :data:`HEADER_SLACK` for the header and
    for shuffle messages (64 entries of 256-character addresses fit easily).
    Meant for aiohttp's ``client_max_size`` and for ``decode(max_bytes=...)``.
    """
    if n_params < 0:
        raise ValueError(f"n_params must be >= 0, got {n_params}")
    return int(n_params) * 4 + HEADER_SLACK


def encoded_size(message: Message, cluster: str) -> int:
    """Exact length of ``encode(message, cluster=cluster)``, without copying params."""
    if isinstance(message, ModelMessage):
        n = int(np.asarray(message.params).size)
        head = _model_header(message.sender, message.arch, message.age, n, cluster, message.stats, message.codec,
                             message.parts)
        return len(head) + codecs.payload_size(message.codec, n)
    return len(encode(message, cluster=cluster))


def encoded_model_size(n_params: int, sender: str, arch: str, cluster: str, stats_columns: int = 0, *,
                       codec: str = "fp32", parts: int = 0, partitions: int = 1) -> int:
    """Exact encoded length of a model message carrying ``n_params`` values (and
    scaling statistics of ``stats_columns`` columns, if any) under ``codec``,
    and, for ``parts`` > 0, that many of ``partitions`` partitions.

    Does not depend on the age nor the partitions' ages (always float64), on
    which partitions are carried (the index is fixed-width) nor on the values,
    so the simulator computes it once per (codec, sizes) and caches it.
    """
    stats = FeatureStats(0.0, np.zeros(stats_columns), np.zeros(stats_columns)) if stats_columns else None
    carried = Parts(partitions, tuple(range(parts)), (0.0,) * parts) if parts else None
    n = int(n_params)
    return len(_model_header(sender, arch, 0.0, n, cluster, stats, codec, carried)) + codecs.payload_size(codec, n)


# -------------------------------------------------------------------------- encode


def message_type(message: Message) -> str:
    """The wire ``type`` of ``message``: model, shuffle_request or shuffle_reply."""
    if isinstance(message, ModelMessage):
        return "model"
    if isinstance(message, ShuffleRequest):
        return "shuffle_request"
    if isinstance(message, ShuffleReply):
        return "shuffle_reply"
    raise TypeError(f"cannot encode {type(message).__name__}")


def encode(message: Message, *, cluster: str) -> bytes:
    """Serialise ``message`` for ``cluster``; the parameters are copied exactly once.

    Raises ``TypeError``/``ValueError`` for messages that are not well formed
    (a programming error on the sending side, not a wire error).
    """
    if isinstance(message, ModelMessage):
        params = np.ascontiguousarray(message.params, dtype="<f4")  # no copy if already <f4
        if params.ndim != 1:
            raise ValueError(f"params must be 1-D, got shape {params.shape}")
        header = _model_header(message.sender, message.arch, message.age, params.shape[0], cluster, message.stats,
                               message.codec, message.parts)
        return b"".join((header, codecs.encode(message.codec, params)))
    if isinstance(message, (ShuffleRequest, ShuffleReply)):
        return msgpack.packb(
            {
                "v": PROTOCOL_VERSION,
                "type": message_type(message),
                "cluster": cluster,
                "sender": message.sender,
                "entries": [[e.address, int(e.age)] for e in message.entries],
            },
            use_bin_type=True,
        )
    raise TypeError(f"cannot encode {type(message).__name__}")


# "params" key, a map of 3, "dtype": "<f4", "shape" key: the fixed middle part.
_PARAMS_DTYPE_SHAPE = b"".join(
    (msgpack.packb("params"), b"\x83", msgpack.packb("dtype"), msgpack.packb("<f4"), msgpack.packb("shape"))
)


_PARAMS_V2 = b"".join((msgpack.packb("params"), b"\x83", msgpack.packb("codec")))
#: The key of the statistics' second vector under each message codec (``codec.stats_vectors``):
#: fp32 keeps version 1's float32 variances; fp16 and int8 carry fp16 standard deviations.
_SPREAD = {"fp32": "var", "fp16": "std", "int8": "std"}


def _model_header(sender: str, arch: str, age: float, n: int, cluster: str,
                  stats: FeatureStats | None = None, codec: str = "fp32", parts: Parts | None = None) -> bytes:
    """Everything of a model message up to and including the params.data bin header.

    v1 for a whole fp32 model, v2 otherwise. ``params`` is the last key of the
    top map and ``data`` the last key of the params map, so the encoded values
    simply follow this header. The headers of ``shape`` and of the ``data`` key
    (msgpack allows non-minimal widths) are chosen so that the payload starts
    at a multiple of 4 bytes: fp32 values decoded with ``np.frombuffer`` over a
    ``bytes`` body are then an aligned array.
    """
    v2 = codec != "fp32" or parts is not None
    nbytes = codecs.payload_size(codec, n)
    if nbytes > 0xFFFFFFFF:
        raise ValueError(f"{n} parameters do not fit in one msgpack bin")
    # One packb for the other fields, then its fixmap header gets one more entry
    # to make room for "params" (msgpack dicts keep insertion order).
    fields: dict[str, Any] = {"v": MODEL_V2 if v2 else PROTOCOL_VERSION, "type": "model", "cluster": cluster,
                              "sender": sender, "arch": arch, "age": float(age)}  # a Python float packs as float64
    if stats is not None:
        mean, spread = codecs.stats_vectors(codec, stats)
        under = codecs.STATS_CODEC[codec]
        fields["stats"] = {"count": float(stats.count), "mean": bytes(codecs.encode(under, mean)),
                           _SPREAD[codec]: bytes(codecs.encode(under, spread))}
    if parts is not None:
        fields["parts"] = {"count": int(parts.count), "index": np.asarray(parts.index, "<u2").tobytes(),
                           "ages": np.asarray(parts.ages, "<f8").tobytes()}
    scalars = msgpack.packb(fields, use_bin_type=True)
    params_head = b"".join((_PARAMS_V2, msgpack.packb(codec), msgpack.packb("shape"))) if v2 else _PARAMS_DTYPE_SHAPE
    head = b"".join((bytes([0x80 | (len(fields) + 1)]), scalars[1:], params_head))
    shape_val = msgpack.packb(n)
    if nbytes < 0x100:
        bin_hdr = b"\xc4" + struct.pack(">B", nbytes)
    elif nbytes < 0x10000:
        bin_hdr = b"\xc5" + struct.pack(">H", nbytes)
    else:
        bin_hdr = b"\xc6" + struct.pack(">I", nbytes)
    # shape array header: fixarray (1 byte) or array16 (3); "data" key header:
    # fixstr (1), str8 (2) or str16 (3). Together they reach every residue mod 4.
    base = len(head) + len(shape_val) + 4 + len(bin_hdr)  # 4 = len("data")
    for arr_hdr in (b"\x91", b"\xdc\x00\x01"):
        for key_hdr in (b"\xa4", b"\xd9\x04", b"\xda\x00\x04"):
            if (base + len(arr_hdr) + len(key_hdr)) % 4 == 0:
                return b"".join((head, arr_hdr, shape_val, key_hdr, b"data", bin_hdr))
    raise AssertionError("unreachable: some header combination aligns")


# -------------------------------------------------------------------------- decode


@dataclass(frozen=True, slots=True)
class Parsed:
    """A body that passed the checks every message passes, sealed or not.

    ``obj`` is the top-level map with its one large binary (``params.data`` of a
    model, ``ct`` of a sealed envelope) replaced by nil; ``span`` says where that
    binary lies in ``view`` as ``(header_start, payload_start, payload_end)``.
    """

    obj: dict[str, Any]
    kind: str  # one of KNOWN_TYPES
    view: bytes | memoryview
    span: Span | None
    span_field: str | None  # "params.data" or "ct"

    def span_of(self, field: str) -> Span | None:
        return self.span if self.span_field == field else None


def parse(body: bytes | bytearray | memoryview, *, max_bytes: int | None = None) -> Parsed:
    """Size, structure, msgpack, ``v`` and ``type``: the first checks of every body.

    Shared by :func:`decode` and by the sealed envelope (``gossipd.envelope``),
    so both read hostile bytes through the same bounded pre-scan.
    """
    if max_bytes is not None and len(body) > max_bytes:
        raise _bad("too_large", f"body is {len(body)} bytes, the limit is {max_bytes}", 413)
    view = memoryview(body).cast("B") if not isinstance(body, bytes) else body

    span, span_field = _scan(view)
    if span is not None:
        hdr_start, _, payload_end = span
        # Cut the large binary out (replaced by nil) so that msgpack never copies it.
        mv = memoryview(view)
        rest = b"".join((mv[:hdr_start], b"\xc0", mv[payload_end:]))
    else:
        rest = view
    try:
        obj = msgpack.unpackb(
            rest,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=MAX_STR_LEN,
            max_bin_len=MAX_STR_LEN,
            max_ext_len=MAX_STR_LEN,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
        )
    except Exception as exc:  # any parser failure on untrusted input is a 400
        raise _bad("not_msgpack", f"body is not valid msgpack ({exc})") from None
    if not isinstance(obj, dict):  # _scan already checked; defensive
        raise _bad("not_a_map", "top level of the message must be a map")

    _check_version(obj)
    kind = require_field(obj, "type", str)
    if kind not in KNOWN_TYPES:
        raise _bad("unknown_type", f"unknown message type {kind[:64]!r}; known: {', '.join(KNOWN_TYPES)}")
    if obj["v"] == MODEL_V2 and kind != "model":
        raise _bad("unsupported_version", f"protocol version 2 defines model messages only; a {kind} is version 1")
    return Parsed(obj, kind, view, span, span_field)


def decode(
    body: bytes | bytearray | memoryview,
    *,
    cluster: str,
    expected_arch: str | None = None,
    expected_params: int | None = None,
    max_bytes: int | None = None,
    expected_stats: int | None = None,
    expected_partitions: int | None = None,
) -> ModelMessage | ShuffleRequest | ShuffleReply:
    """Parse and validate one received plain (unsealed) body; raise :class:`WireError` on any problem.

    ``max_bytes`` defaults to ``max_body_bytes(expected_params)`` when
    ``expected_params`` is given, and to no size limit otherwise (the body is
    already in memory; the structural limits still apply). For a model message,
    ``params`` is a float32 view of ``body`` (no copy; read-only when ``body``
    is ``bytes``). It is copied only if a foreign encoder left it misaligned.
    ``expected_stats``: the number of scaling-statistics columns a model message
    must carry (network-learned scaling) when it is whole or carries partition
    0; None: optional, any size. ``expected_partitions``: the receiver's P; a
    cut model message must be cut into as many (409 ``wrong_partitions``); a
    whole one is always accepted. A v2 model is decoded under its codec: the
    decoded values are a new float32 array (fp16, int8), or, for fp32, a view
    of ``body`` as in v1; its ``stats`` are decoded under the same codec.

    A sealed envelope is refused with 401 ``unauthenticated``: this function is
    what a node without a keyring runs; ``gossipd.envelope`` opens sealed ones.
    """
    if max_bytes is None and expected_params is not None:
        max_bytes = max_body_bytes(expected_params)
    parsed = parse(body, max_bytes=max_bytes)
    if parsed.kind == SEALED:
        raise WireError(401, "unauthenticated", "the message is sealed but this node has no keyring to open it")
    obj, view, kind = parsed.obj, parsed.view, parsed.kind
    data_span = parsed.span_of("params.data")
    their_cluster = require_field(obj, "cluster", str)
    if their_cluster != cluster:
        raise _bad(
            "wrong_cluster",
            f"message is for cluster {their_cluster[:256]!r} but this node is in cluster {cluster!r}",
            409,
        )
    sender = require_address(obj.get("sender", MISSING), "sender", "bad_sender")

    if kind == "model":
        return _decode_model(obj, sender, view, data_span, expected_arch, expected_params, expected_stats,
                             expected_partitions)
    entries = _decode_entries(obj)
    if kind == "shuffle_request":
        return ShuffleRequest(sender=sender, entries=entries)
    return ShuffleReply(sender=sender, entries=entries)


MISSING = object()  # ``obj.get(name, MISSING)``: absent, as opposed to nil


def require_field(obj: dict, name: str, typ: type, prefix: str = "") -> Any:
    """``obj[name]`` if present and of msgpack type ``typ`` (bool is not an int); else a 400."""
    value = obj.get(name, MISSING)
    if value is MISSING:
        raise _bad("missing_field", f"missing field {prefix + name!r}")
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise _bad("bad_field", f"field {prefix + name!r} must be {typ.__name__}, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "map", list: "array", bytes: "binary", type(None): "nil"}.get(type(value), type(value).__name__)


def _check_version(obj: dict) -> None:
    v = require_field(obj, "v", int)
    if v not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise _bad("unsupported_version", f"protocol version {v} is not supported; this node speaks {supported}")


def require_address(value: Any, what: str, code: str) -> str:
    """A peer address as the wire allows it: a printable str of 1 to 256 characters.

    Only the shape; what an address may point at is ``gossipd.addresses``' concern.
    """
    if value is MISSING:
        raise _bad("missing_field", f"missing field {what!r}")
    if not isinstance(value, str):
        raise _bad(code, f"{what} must be a string, got {_kind(value)}")
    if not value or len(value) > MAX_ADDRESS_LEN:
        raise _bad(code, f"{what} must be 1 to {MAX_ADDRESS_LEN} characters, got {len(value)}")
    if not value.isprintable():
        raise _bad(code, f"{what} contains non-printable characters")
    return value


def _decode_model(
    obj: dict,
    sender: str,
    view: bytes | memoryview,
    data_span: tuple[int, int, int] | None,
    expected_arch: str | None,
    expected_params: int | None,
    expected_stats: int | None = None,
    expected_partitions: int | None = None,
) -> ModelMessage:
    arch = require_field(obj, "arch", str)
    if expected_arch is not None and arch != expected_arch:
        raise _bad(
            "wrong_arch",
            f"model architecture {arch[:128]!r} differs from this node's {expected_arch!r}",
            409,
        )
    age = obj.get("age", MISSING)
    if age is MISSING:
        raise _bad("missing_field", "missing field 'age'")
    if isinstance(age, bool) or not isinstance(age, (int, float)):
        raise _bad("bad_field", f"field 'age' must be a number, got {_kind(age)}")
    age = float(age)
    if not math.isfinite(age) or age < 0.0:
        raise _bad("bad_age", f"age must be finite and >= 0, got {age!r}")

    v2 = obj["v"] == MODEL_V2
    parts = _decode_parts(obj["parts"], expected_partitions) if v2 and "parts" in obj else None
    p = require_field(obj, "params", dict)
    if v2:
        codec = require_field(p, "codec", str, "params.")
        if codec not in codecs.CODECS:
            raise _bad("bad_codec", f"params codec {codec[:32]!r} is not supported; supported: "
                                    f"{', '.join(codecs.CODECS)}")
    else:
        codec = "fp32"
        dtype = require_field(p, "dtype", str, "params.")
    shape = require_field(p, "shape", list, "params.")
    if "data" not in p:
        raise _bad("missing_field", "missing field 'params.data'")
    if data_span is None:
        raise _bad("bad_field", f"field 'params.data' must be binary, got {_kind(p['data'])}")
    if not v2 and dtype not in ALLOWED_DTYPES:
        raise _bad("bad_dtype", f"params dtype {dtype[:32]!r} is not allowed; allowed: {', '.join(sorted(ALLOWED_DTYPES))}")
    if len(shape) != 1 or isinstance(shape[0], bool) or not isinstance(shape[0], int) or shape[0] < 0:
        raise _bad("bad_shape", f"params shape must be [n] with n >= 0, got {str(shape)[:64]}")
    n = shape[0]
    if expected_params is not None:
        expected = expected_params if parts is None else _cut_size(expected_params, parts)
        if n != expected:
            what = "model has" if parts is None else f"partitions {_show(parts.index)} of {parts.count} have"
            raise _bad("bad_shape", f"{what} {n} parameters, this node expects {expected}")
    _, start, end = data_span
    need = codecs.payload_size(codec, n)
    if end - start != need:  # checked before anything is decoded or allocated
        raise _bad("bad_shape", f"params data is {end - start} bytes but shape [{n}] of {codec} needs {need}")
    try:
        params = _fp32_view(view, n, start) if codec == "fp32" else codecs.decode(codec, n, memoryview(view)[start:end])
    except codecs.CodecError as exc:
        raise _bad("bad_codec_data", str(exc)) from None
    if not np.isfinite(params).all():
        bad = int(params.size - np.count_nonzero(np.isfinite(params)))
        raise _bad("non_finite", f"params contain {bad} non-finite values (NaN or infinity)")
    stats = _decode_stats(obj["stats"], expected_stats, codec) if "stats" in obj else None
    if stats is None and expected_stats and (parts is None or parts.index[0] == 0):
        raise _bad("missing_field", "missing field 'stats' (this node learns feature scaling by gossip; "
                                    "they ride with the whole model or partition 0)")
    return ModelMessage(sender=sender, arch=arch, age=age, params=params, stats=stats, codec=codec, parts=parts)


def _fp32_view(view: bytes | memoryview, n: int, start: int) -> np.ndarray:
    params = np.frombuffer(view, dtype="<f4", count=n, offset=start)
    if not params.flags.aligned:  # only from foreign encoders; ours aligns
        params = params.copy()
        params.flags.writeable = False
    return params


def _cut_size(n_params: int, parts: Parts) -> int:
    """Coordinates of ``parts`` in an ``n_params`` model."""
    return sum(part_size(n_params, parts.count, k) for k in parts.index)


def _show(index: tuple[int, ...]) -> str:
    return ",".join(map(str, index[:8])) + (",..." if len(index) > 8 else "")


def _decode_parts(raw: Any, expected: int | None) -> Parts:
    if not isinstance(raw, dict):
        raise _bad("bad_field", f"field 'parts' must be map, got {_kind(raw)}")
    count = require_field(raw, "count", int, "parts.")
    if not 2 <= count <= MAX_PARTITIONS:
        raise _bad("bad_parts", f"parts.count must be 2 to {MAX_PARTITIONS}, got {count}")
    if expected is not None and count != expected:
        raise _bad("wrong_partitions", f"model is cut into {count} partitions but this node's models into "
                                       f"{expected}", 409)
    index_b, ages_b = require_field(raw, "index", bytes, "parts."), require_field(raw, "ages", bytes, "parts.")
    k = len(index_b) // 2
    if len(index_b) % 2 or not 1 <= k <= count or len(ages_b) != 8 * k:
        raise _bad("bad_parts", f"parts.index ({len(index_b)} bytes) must hold 1 to {count} uint16 values and "
                                f"parts.ages ({len(ages_b)} bytes) one float64 for each")
    index = np.frombuffer(index_b, dtype="<u2")
    if (index >= count).any() or (np.diff(index.astype(np.int64)) <= 0).any():
        raise _bad("bad_parts", f"parts.index must be increasing partition numbers below {count}")
    ages = np.frombuffer(ages_b, dtype="<f8")
    if not np.isfinite(ages).all() or (ages < 0).any():
        raise _bad("bad_age", "parts.ages must be finite and >= 0")
    return Parts(count, tuple(int(i) for i in index), tuple(float(a) for a in ages))


def _decode_stats(raw: Any, expected: int | None, codec: str = "fp32") -> FeatureStats:
    """``stats`` of a message under ``codec``: version 1 and fp32 as float32 ``mean`` and
    ``var``, fp16 and int8 as fp16 ``mean`` and ``std`` (``codec.STATS_CODEC``)."""
    if not isinstance(raw, dict):
        raise _bad("bad_field", f"field 'stats' must be map, got {_kind(raw)}")
    count = raw.get("count", MISSING)
    if count is MISSING:
        raise _bad("missing_field", "missing field 'stats.count'")
    if isinstance(count, bool) or not isinstance(count, (int, float)) or not math.isfinite(count) or count < 0:
        raise _bad("bad_stats", f"stats.count must be a finite number >= 0, got {str(count)[:32]}")
    key, under = _SPREAD[codec], codecs.STATS_CODEC[codec]
    mean, spread = require_field(raw, "mean", bytes, "stats."), require_field(raw, key, bytes, "stats.")
    k = codecs.values_in(under, len(mean))
    if len(mean) != len(spread) or k is None:  # sizes first: nothing is decoded before they fit
        raise _bad("bad_stats", f"stats.mean ({len(mean)} bytes) and stats.{key} ({len(spread)} bytes) must be "
                                f"{under} vectors of one length")
    if expected is not None and k != expected:
        raise _bad("bad_stats", f"stats have {k} columns, this node expects {expected}")
    m, s = codecs.decode(under, k, mean), codecs.decode(under, k, spread)
    if not (np.isfinite(m).all() and np.isfinite(s).all()) or (s < 0).any():
        raise _bad("bad_stats", f"stats.mean and stats.{key} must be finite, {key} >= 0")
    return codecs.stats_from_vectors(codec, float(count), m, s)


def _decode_entries(obj: dict) -> tuple[PeerDescriptor, ...]:
    entries = require_field(obj, "entries", list)
    if len(entries) > MAX_ENTRIES:
        raise _bad("bad_entries", f"shuffle message has {len(entries)} entries, at most {MAX_ENTRIES} allowed")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, list) or len(entry) != 2:
            raise _bad("bad_entries", f"entries[{i}] must be [address, age]")
        address, age = entry
        require_address(address, f"entries[{i}] address", "bad_entries")
        if isinstance(age, bool) or not isinstance(age, int) or age < 0:
            raise _bad("bad_entries", f"entries[{i}] age must be an integer >= 0, got {str(age)[:32]}")
        out.append(PeerDescriptor(address=address, age=age))
    return tuple(out)


# --------------------------------------------------------------------- pre-scan

# Per first byte: (kind, bytes of length field or fixed payload size).
# Kinds: "int"/"nil"/"bool"/"float" scalars with a fixed payload, "str"/"bin"/"ext"
# with a length field, "array"/"map" with a count field, "fix*" with the
# length/count in the low bits.
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
_LEN = {0xC4: ("bin", 1), 0xC5: ("bin", 2), 0xC6: ("bin", 4),
        0xC7: ("ext", 1), 0xC8: ("ext", 2), 0xC9: ("ext", 4),
        0xD9: ("str", 1), 0xDA: ("str", 2), 0xDB: ("str", 4)}
_COUNT = {0xDC: ("array", 2), 0xDD: ("array", 4), 0xDE: ("map", 2), 0xDF: ("map", 4)}

_ROOT, _TOP, _PARAMS, _OTHER = 0, 1, 2, 3  # frame tags for finding params.data and ct



def _scan(buf: bytes | memoryview) -> tuple[Span | None, str | None]:
    """Walk the token headers once, without recursion and without building objects.

    Enforces :data:`MAX_DEPTH`, :data:`MAX_ITEMS`, :data:`MAX_STR_LEN` and string
    map keys; detects truncation, the reserved byte 0xc1 and trailing bytes.
    Two binaries may exceed :data:`MAX_STR_LEN`: ``params.data`` (a model's
    parameters) and the top-level ``ct`` (a sealed envelope's ciphertext); a
    body holding both is refused. Returns ``((header_start, payload_start,
    payload_end), field)`` of the one present (the last of duplicate keys, as
    msgpack's dict keeps the last), or ``(None, None)``. Cost: O(items), at
    most :data:`MAX_ITEMS` steps whatever the body size; payloads are skipped.
    """
    n = len(buf)
    if n == 0:
        raise _bad("truncated", "body is empty")
    first = buf[0]
    if not (0x80 <= first <= 0x8F or first in (0xDE, 0xDF)):
        if first == 0xC1:
            raise _bad("not_msgpack", "byte 0xc1 at offset 0 is never used in msgpack")
        raise _bad("not_a_map", "top level of the message must be a map")

    # Stack frames: [remaining tokens, tag, is_map, last key bytes]
    stack: list[list] = [[1, _ROOT, False, None]]
    pos = 0
    items = 0
    data_span: Span | None = None
    ct_span: Span | None = None
    while stack:
        frame = stack[-1]
        is_key = frame[2] and frame[0] % 2 == 0
        if pos >= n:
            raise _bad("truncated", f"body ends at byte {n} inside an unfinished message")
        start = pos
        b = buf[pos]
        pos += 1
        items += 1
        if items > MAX_ITEMS:
            raise _bad("too_many_items", f"message has more than {MAX_ITEMS} msgpack objects")
        count = -1  # >= 0 for containers
        is_map = False
        kind = "scalar"
        length = 0
        if b <= 0x7F or b >= 0xE0:
            pass
        elif b <= 0x8F:
            count, is_map = b & 0x0F, True
        elif b <= 0x9F:
            count = b & 0x0F
        elif b <= 0xBF:
            kind, length = "str", b & 0x1F
        elif b in _FIXED:
            length = _FIXED[b]
        elif b in _LEN:
            kind, width = _LEN[b]
            if pos + width > n:
                raise _bad("truncated", f"body ends inside a {kind} header at byte {start}")
            length = int.from_bytes(buf[pos : pos + width], "big")
            pos += width
            if kind == "ext":
                length += 1  # the type byte
        elif b in _COUNT:
            ckind, width = _COUNT[b]
            if pos + width > n:
                raise _bad("truncated", f"body ends inside an {ckind} header at byte {start}")
            count = int.from_bytes(buf[pos : pos + width], "big")
            pos += width
            is_map = ckind == "map"
        else:  # 0xc1
            raise _bad("not_msgpack", f"byte 0xc1 at offset {start} is never used in msgpack")

        if is_key and kind != "str":
            raise _bad("bad_field", f"map keys must be strings (byte {start})")
        if count >= 0:
            if count > MAX_ITEMS:
                what = "map" if is_map else "array"
                raise _bad("too_many_items", f"{what} at byte {start} declares {count} items, at most {MAX_ITEMS} allowed")
        else:
            if kind != "scalar" and length > MAX_STR_LEN and not (
                kind == "bin" and (frame[1], frame[3]) in ((_PARAMS, b"data"), (_TOP, b"ct"))
            ):
                raise _bad("too_long", f"{kind} at byte {start} is {length} bytes, at most {MAX_STR_LEN} allowed")
            if pos + length > n:
                raise _bad("truncated", f"body ends inside a {length}-byte value at byte {start}")
            pos += length

        # Track the path top-map -> "params" -> "data".
        if is_key:
            frame[3] = bytes(buf[pos - length : pos]) if length <= 16 else None
        elif frame[1] == _TOP and frame[3] == b"params":
            data_span = None  # a later "params" replaces an earlier one
        elif frame[1] == _TOP and frame[3] == b"ct":
            ct_span = (start, pos - length, pos) if kind == "bin" else None
        elif frame[1] == _PARAMS and frame[3] == b"data":
            data_span = (start, pos - length, pos) if kind == "bin" else None

        frame[0] -= 1
        if count >= 0:
            depth = len(stack)  # containers enclosing this one, plus one
            if depth > MAX_DEPTH:
                raise _bad("too_deep", f"containers nested more than {MAX_DEPTH} deep")
            if frame[1] == _ROOT:
                tag = _TOP
            elif frame[1] == _TOP and not is_key and frame[3] == b"params" and is_map:
                tag = _PARAMS
            else:
                tag = _OTHER
            if count > 0:
                stack.append([count * 2 if is_map else count, tag, is_map, None])
        while stack and stack[-1][0] == 0:
            stack.pop()
    if pos != n:
        raise _bad("trailing_data", f"message is followed by {n - pos} extra bytes")
    if data_span is not None and ct_span is not None:
        raise _bad("bad_field", "a message carries either 'params.data' or 'ct', not both")
    if ct_span is not None:
        return ct_span, "ct"
    return data_span, ("params.data" if data_span is not None else None)

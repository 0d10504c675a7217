"""Byte-level mutations of valid bodies, shared by the wire and sealed-envelope fuzz tests."""

from __future__ import annotations

from hypothesis import strategies as st

#: Up to four edits: (position, byte, operation); positions wrap around the body.
EDITS = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])),
    min_size=1,
    max_size=4,
)


def mutate(body: bytes, edits: list[tuple[int, int, str]]) -> bytes:
    out = bytearray(body)
    for pos, byte, op in edits:
        pos %= len(out) + (op == "insert")
        if op == "set" and pos < len(out):
            out[pos] = byte
        elif op == "insert":
            out.insert(pos, byte)
        elif op == "delete" and out:
            del out[pos % len(out)]
    return bytes(out)

"""Wire codec throughput for a 1,000,000-parameter model message, plain and sealed.

Run: ``python bench/wire.py``. Prints MB/s (of encoded body) for encode, decode
(with all validation: limits, dtype, shape, finiteness), the round trip, and a
plain copy of the same parameter bytes as the yardstick; then the same for a
sealed message (``gossipd.envelope``: AES-256-GCM, key id, nonce, binding,
replay guard) and the ratio sealed / plain. No assertions.

The ratio has a floor: a seal must encrypt and then decrypt every byte, while
the plain path runs at memcpy speed (the body is parameters plus ~140 bytes),
so sealed / plain is at least (plain + 2 x AES-GCM) / plain. The last line
puts the absolute cost beside the time the same body takes on a 1 Gbit/s link.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402

from gossipd import envelope, security, wire  # noqa: E402
from gossipd.core.messages import ModelMessage  # noqa: E402

N_PARAMS = 1_000_000
BUDGET_S = 2.0  # per measurement; five measurements stay well under 20 s
CLUSTER = "bench"
ARCH = "mlp-1m-0123456789abcdef"


def best_per_call(fn, budget_s: float = BUDGET_S) -> tuple[float, int]:
    """Best seconds per call over batches run for about ``budget_s``."""
    fn()  # warm up
    batch = 1
    while True:  # find a batch lasting ~20 ms
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        dt = time.perf_counter() - t0
        if dt > 0.02:
            break
        batch *= 2
    best, calls, deadline = dt / batch, batch, time.perf_counter() + budget_s
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, (time.perf_counter() - t0) / batch)
        calls += batch
    return best, calls


def main() -> None:
    rng = np.random.default_rng(0)
    params = rng.standard_normal(N_PARAMS).astype(np.float32)
    msg = ModelMessage(sender="http://10.0.0.1:7070", arch=ARCH, age=12345.0, params=params)
    body = wire.encode(msg, cluster=CLUSTER)
    limit = wire.max_body_bytes(N_PARAMS)

    def enc():
        return wire.encode(msg, cluster=CLUSTER)

    def dec():
        return wire.decode(body, cluster=CLUSTER, expected_arch=ARCH, expected_params=N_PARAMS, max_bytes=limit)

    def rt():
        return wire.decode(
            wire.encode(msg, cluster=CLUSTER),
            cluster=CLUSTER, expected_arch=ARCH, expected_params=N_PARAMS, max_bytes=limit,
        )

    out = dec()
    assert np.array_equal(out.params, params)
    mb = len(body) / 1e6
    print(f"model message: {N_PARAMS:,} float32 params, body {len(body):,} bytes "
          f"(header {len(body) - 4 * N_PARAMS} bytes), max_body_bytes {limit:,}")
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}")
    rows = [
        ("encode", enc),
        ("decode (validated)", dec),
        ("round trip", rt),
        ("numpy arr.copy()", params.copy),
        ("bytes(arr)", lambda: bytes(params)),
    ]
    results = {}
    for name, fn in rows:
        t, calls = best_per_call(fn)
        results[name] = t
        print(f"  {name:<20} {t * 1e3:8.3f} ms/call  {mb / t:9.0f} MB/s   ({calls} calls)")
    copy = min(results["numpy arr.copy()"], results["bytes(arr)"])
    print(f"round trip / copy ratio: {results['round trip'] / copy:.2f}x")
    print(f"decode / copy ratio:     {results['decode (validated)'] / copy:.2f}x")
    sealed(msg, mb, results)


def sealed(msg: ModelMessage, mb: float, plain: dict[str, float]) -> None:
    """Seal and open the same message; each open gets a fresh replay guard (a dict insert)."""
    keyring = security.Keyring.parse(security.generate_key_line())
    now = 1_700_000_000.0
    sender, receiver = msg.sender, "http://10.0.0.2:7070"
    limit = wire.max_body_bytes(N_PARAMS)
    body = envelope.seal_message(msg, cluster=CLUSTER, keyring=keyring, to=receiver, now=now)

    def seal():
        return envelope.seal_message(msg, cluster=CLUSTER, keyring=keyring, to=receiver, now=now)

    def open_(b=body):
        return envelope.open_message(b, cluster=CLUSTER, address=receiver, keyring=keyring,
                                     guard=security.ReplayGuard(), now=now, expected_arch=ARCH,
                                     expected_params=N_PARAMS, max_bytes=limit)

    assert np.array_equal(open_().params, msg.params) and sender == open_().sender
    print(f"sealed model message: body {len(body):,} bytes (+{len(body) - wire.encoded_size(msg, CLUSTER)} "
          f"bytes of envelope and tag), AES-256-GCM")
    results = {}
    for name, fn in [("seal (encode)", seal), ("open (decode)", open_), ("sealed round trip", lambda: open_(seal()))]:
        t, calls = best_per_call(fn)
        results[name] = t
        print(f"  {name:<20} {t * 1e3:8.3f} ms/call  {mb / t:9.0f} MB/s   ({calls} calls)")
    data, nonce, key = bytes(len(body)), bytes(12), bytes(32)
    for name, aead in (("AES-256-GCM", AESGCM(key)), ("ChaCha20-Poly1305", ChaCha20Poly1305(key))):
        t, _ = best_per_call(lambda a=aead: a.encrypt(nonce, data, b""), budget_s=1.0)
        print(f"  raw {name:<16} {t * 1e3:8.3f} ms/call  {mb / t:9.0f} MB/s   (encrypt alone, for the choice)")
    ratio = results["sealed round trip"] / plain["round trip"]
    print(f"sealed / plain round trip (encode+decode): {ratio:.2f}x "
          f"(+{(results['sealed round trip'] - plain['round trip']) * 1e3:.2f} ms per message; "
          f"sending {mb:.1f} MB at 1 Gbit/s takes {mb * 8:.0f} ms)")


if __name__ == "__main__":
    main()

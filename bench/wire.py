"""Wire codec throughput for a 1,000,000-parameter model message.

Run: ``python bench/wire.py``. Prints MB/s (of encoded body) for encode, decode
(with all validation: limits, dtype, shape, finiteness), the round trip, and a
plain copy of the same parameter bytes as the yardstick. No assertions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossipd import wire  # noqa: E402
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


if __name__ == "__main__":
    main()

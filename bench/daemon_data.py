"""A daemon's data and predictions, measured on real processes (issue 11's daemon figures).

1. Rows appended to a followed CSV file -> trained on: two daemons on wine,
   each following its own CSV file (default gossip interval, 5 s); ``--appends``
   times (at most 10), 9 rows are appended to node A's file and the time until its
   ``/v1/status`` shows them taken and its model's age risen by the rows it
   trains on is measured, in seconds and in gossip intervals.
2. ``POST /v1/predict`` of 100 raw digits rows to a digits/logreg daemon:
   latency over ``--requests`` requests on one keep-alive connection
   (median, 95th percentile, max), and the same for 1 row.
3. The user conv module (``tests/plugins/user_conv.py``) in 3 daemons on digits
   images: mean held-out accuracy over time, and the time to 0.90.

    python bench/daemon_data.py [--appends 10] [--requests 200] [--conv-seconds 60]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from gossipd.data import load_raw
from gossipd.testing import DaemonProc, start_network, stop_all

ROOT = Path(__file__).resolve().parent.parent
USER_CONV = ROOT / "tests" / "plugins" / "user_conv.py"


def status(url: str) -> dict:
    with urllib.request.urlopen(url + "/v1/status", timeout=5) as resp:
        return json.loads(resp.read())


def lines(ex, idx) -> str:
    return "".join(",".join(f"{v:g}" for v in ex.X[i]) + f",{int(ex.y[i])}\n" for i in idx)


def arrivals(base: Path, appends: int) -> None:
    ex = load_raw("wine")
    order = np.random.default_rng(0).permutation(len(ex.y))
    header = ",".join(f"f{j}" for j in range(ex.n_features)) + ",label\n"
    base.mkdir(parents=True, exist_ok=True)
    files = [base / "a.csv", base / "b.csv"]
    files[0].write_text(header + lines(ex, order[:40]))
    files[1].write_text(header + lines(ex, order[40:80]))
    interval = 5.0
    a = DaemonProc(base / "a", ["--dataset", str(files[0]), "--log-level", "WARNING"]).start()
    procs = [a]
    try:
        url = a.wait_listening()
        procs.append(DaemonProc(base / "b", ["--dataset", str(files[1]), "--join", url,
                                             "--log-level", "WARNING"]).start())
        for p in procs:
            p.wait_ready()
        waits = []
        rest = list(order[80:])
        rng = np.random.default_rng(1)
        for _ in range(appends):
            take, rest = rest[:9], rest[9:]
            before = status(url)
            t0 = time.monotonic()
            with files[0].open("a") as fh:
                fh.write(lines(ex, take))
            while True:
                st = status(url)
                if st["data"]["arrived"] >= before["data"]["arrived"] + len(take):
                    trained = st["data"]["train_examples"] - before["data"]["train_examples"]
                    if st["model"]["age"] >= before["model"]["age"] + trained:
                        waits.append(time.monotonic() - t0)
                        break
                if time.monotonic() - t0 > 4 * interval:
                    raise RuntimeError(f"rows not taken within {4 * interval:g} s: {st['data']}")
                time.sleep(0.02)
            time.sleep(float(rng.uniform(0, 1.0)))  # append at another phase of the poll timer
    finally:
        stop_all(procs)
    print(f"1. rows appended to a followed CSV -> trained on ({len(waits)} appends of 9 rows, gossip interval "
          f"{interval:g} s, data.poll_interval 1 s):")
    print(f"   median {statistics.median(waits):.2f} s, max {max(waits):.2f} s "
          f"= {max(waits) / interval:.2f} gossip intervals at most")


def predict_latency(base: Path, requests: int) -> None:
    ex = load_raw("digits")
    proc = DaemonProc(base / "p", ["--log-level", "WARNING", "--gossip-interval", "3600"]).start()
    try:
        url = proc.wait_ready()
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {proc.admin_token}"}
        for n in (100, 1):
            body = json.dumps({"rows": ex.X[:n].tolist()}).encode()
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                conn.request("POST", "/v1/predict", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                times.append(time.perf_counter() - t0)
                if resp.status != 200:
                    raise RuntimeError(f"/v1/predict answered {resp.status}: {data[:200]!r}")
            answer = json.loads(data)
            assert len(answer["labels"]) == n
            times.sort()
            print(f"2. POST /v1/predict, {n:3d} rows, {requests} requests on one connection: median "
                  f"{statistics.median(times) * 1e3:.1f} ms, p95 {times[int(0.95 * len(times))] * 1e3:.1f} ms, "
                  f"max {times[-1] * 1e3:.1f} ms")
        conn.close()
    finally:
        stop_all([proc])


def conv_in_three_daemons(base: Path, seconds: float) -> None:
    spec = f"python:{USER_CONV}:make"
    procs = start_network(base, 3, extra=["--model", spec, "--gossip-interval", "1", "--shuffle-interval", "1",
                                          "--log-level", "WARNING", "--seed", "2"], timeout=180)
    try:
        t0 = time.monotonic()
        reached, mean = None, float("nan")
        while time.monotonic() - t0 < seconds:
            accs = [status(p.url)["evaluation"]["accuracy"] for p in procs]
            if None not in accs:
                mean = float(np.mean(accs))
                if reached is None and mean >= 0.90:
                    reached = time.monotonic() - t0
            time.sleep(0.5)
        sts = [status(p.url) for p in procs]
    finally:
        stop_all(procs)
    when = "not reached" if reached is None else f"reached {reached:.1f} s after all served"
    nodes = ", ".join(f"{st['evaluation']['accuracy']:.3f}" for st in sts)
    print(f"3. user conv module ({sts[0]['model']['params']} params) in 3 daemons, gossip every 1 s: mean held-out "
          f"accuracy {mean:.3f} after {seconds:g} s (nodes: {nodes}); 0.90 {when}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--appends", type=int, default=10, help="at most 10 (wine has 98 rows to append)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--conv-seconds", type=float, default=60.0)
    ns = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        arrivals(base / "arrivals", ns.appends)
        predict_latency(base / "predict", ns.requests)
        conv_in_three_daemons(base / "conv", ns.conv_seconds)


if __name__ == "__main__":
    main()

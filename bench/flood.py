"""A daemon under a flood of pushes, and daemons healing after a partition (issue 10).

1. Flood: one real gossipd (digits, logreg) on 127.0.0.1; N pushes at once, each from its own
   sender over its own connection (``gossipd.testing.flood``), while a thread probes
   /healthz. Prints the answers by status, what a sender makes of them (every one alive: no
   peer dropped), /healthz latency (p50, p99, max) against the same probes on the idle daemon
   measured first, and the daemon's RSS growth.
2. Partition: 6 in-memory daemons on a virtual clock, defaults only, cut 3 | 3 for 240 s
   (``gossipd.testing.partition_then_heal``): seconds (virtual) until one overlay again, per
   seed, with reseeding on (the default) and off.

    .venv/bin/python bench/flood.py [--pushes 1000] [--seeds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gossipd import wire
from gossipd.core.messages import ModelMessage
from gossipd.core.scaling import FeatureStats
from gossipd.daemon.transport import outcome_of_status
from gossipd.testing import DaemonProc, flood, partition_then_heal, stop_all

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import get_json  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle_probes(url: str, seconds: float = 1.0) -> list[float]:
    import urllib.request

    out: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        with urllib.request.urlopen(url + "/healthz", timeout=1.0) as resp:
            resp.read()
        out.append(time.perf_counter() - t0)
        time.sleep(0.01)
    return out


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_flood(pushes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc = DaemonProc(Path(tmp) / "node", ["--share", "1/4", "--gossip-interval", "3600",
                                               "--shuffle-interval", "3600"]).start()
        try:
            url = proc.wait_ready()
            status = get_json(url + "/v1/status")
            n, k = status["model"]["params"], status["model"]["stat_columns"]
            rng = np.random.default_rng(0)
            bodies = [wire.encode(ModelMessage(f"http://127.0.0.1:{20000 + i}", status["model"]["fingerprint"], 100.0,
                                               rng.normal(0, 0.01, n).astype(np.float32),
                                               FeatureStats(1.0, np.zeros(k), np.ones(k)) if k else None),
                                  cluster="default") for i in range(pushes)]
            idle = idle_probes(url)
            before = rss_mib(proc.proc.pid)
            report = asyncio.run(flood(url, bodies, timeout=5.0, probe_timeout=1.0, probe_interval=0.005))
            time.sleep(1.0)
            after = rss_mib(proc.proc.pid)
            inbox = get_json(url + "/v1/status")["inbox"]
        finally:
            stop_all([proc])
    alive = sum(c for s, c in report.answers.items() if outcome_of_status(s).alive)
    lat = report.probe_latencies
    print(f"flood: {pushes} concurrent pushes answered in {report.seconds:.2f} s: "
          + ", ".join(f"{s}: {c}" for s, c in sorted(report.answers.items()))
          + f"; failed sends {sum(report.failures.values())} {dict(report.failures) or ''}")
    print(f"  senders would keep the peer: {alive}/{pushes} answers are alive (202/429/503)")
    print(f"  daemon inbox: {inbox}")
    print(f"  /healthz during the flood: {len(lat)} probes, p50 {quantile(lat, .5) * 1e3:.1f} ms, "
          f"p99 {quantile(lat, .99) * 1e3:.1f} ms, max {max(lat) * 1e3:.1f} ms, {report.probe_failures} "
          f"without an answer within 1 s")
    print(f"  /healthz idle (same daemon, before): p50 {quantile(idle, .5) * 1e3:.1f} ms, p99 "
          f"{quantile(idle, .99) * 1e3:.1f} ms; flood/idle p99 ratio {quantile(lat, .99) / quantile(idle, .99):.0f}x")
    print(f"  RSS {before:.1f} -> {after:.1f} MiB (+{after - before:.1f} MiB)")


def bench_partition(seeds: int) -> None:
    for label, overrides in (("defaults (reseed every 5 shuffle periods)", None),
                             ("reseeding off", {"peer_sampling.reseed_interval": float("inf")})):
        healed: list[float | None] = []
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(seeds):
                got = partition_then_heal(Path(tmp) / f"s{seed}", cut=240.0, seed=seed, overrides=overrides)
                assert got["during"] == [3, 3] and got["across"] == 0, got
                healed.append(got["healed_after"])
        ok = [h for h in healed if h is not None]
        shown = ", ".join("never" if h is None else f"{h:.0f}" for h in healed)
        summary = (f"median {statistics.median(ok):.0f} s, max {max(ok):.0f} s" if ok else "none healed")
        print(f"partition 6 daemons 3 | 3 for 240 s, {label}: one overlay again after [{shown}] s "
              f"(virtual; within 120 s: {len(ok)}/{seeds}; {summary}); {time.perf_counter() - t0:.1f} s of wall time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pushes", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    bench_flood(args.pushes)
    bench_partition(args.seeds)


if __name__ == "__main__":
    main()

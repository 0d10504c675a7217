"""How many model messages per second one gossipd accepts and merges.

Starts one real daemon (no peers, so it only receives) on 127.0.0.1 and drives
it with a bounded load generator: C concurrent aiohttp clients, each a sender
of its own, posting pre-encoded model messages for a fixed time. They send no
``Prefer: respond-async``, so each waits for its merge (``200``) before its
next post, as gossipd senders did before ``202``: the load follows the trainer
instead of burying it (a sender that gets ``202`` at once would post again at
once, and every post but the last would be superseded). The per-sender rate
limit is lifted (``sender_rate``): this measures the trainer. Baseline in the same run:
the same decode + merge + train done in-process without HTTP, one after another.

    python bench/daemon.py [--seconds 8] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path

from collections import Counter

import aiohttp
import numpy as np

from gossipd.threads import one_compute_thread
from gossipd import wire
from gossipd.data import load_dataset, make_scaling, node_share
from gossipd.testing import DaemonProc, stop_all
from gossipd.core.learner import LocalData, make_learner
from gossipd.core.scaling import FeatureStats
from gossipd.core.messages import ModelMessage
from gossipd.core.node import GossipConfig, GossipNode
from peer_sampling.topology import StaticSampler

MODELS = [("small", "logreg"), ("1M", "mlp:1024,960")]
SHARE = "1/8"


async def load(url: str, bodies: list[bytes], seconds: float) -> dict[str, float]:
    answers: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(headers={"Content-Type": "application/x-msgpack"}) as session:
        async def worker(body: bytes) -> None:
            while time.monotonic() < deadline:
                async with session.post(url + "/v1/gossip/model", data=body) as resp:
                    await resp.read()
                    answers[resp.status] += 1
        started = time.monotonic()
        await asyncio.gather(*(worker(b) for b in bodies))
        elapsed = time.monotonic() - started
    return {"merged_per_s": answers[200] / elapsed, "busy_per_s": answers[503] / elapsed,
            "errors": sum(c for s, c in answers.items() if s not in (200, 503)), "seconds": elapsed}


def in_process_rate(spec: str, body: bytes, fingerprint: str, n_params: int, seconds: float) -> float:
    """decode + merge + train without HTTP: the ceiling the daemon's overhead is measured against."""
    ds = load_dataset("digits")
    X, y, _, _ = node_share(ds, SHARE, "iid")
    learner = make_learner(spec, ds.schema, scaling=make_scaling("network", ds.schema))  # as the daemon
    assert learner.fingerprint == fingerprint and learner.n_params == n_params
    node = GossipNode("bench", learner, LocalData.for_schema(X, y, ds.schema),
                      StaticSampler("bench", [], np.random.default_rng(0)), GossipConfig(), np.random.default_rng(0))
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        msg = wire.decode(body, cluster="default", expected_arch=fingerprint, expected_params=n_params,
                          expected_stats=learner.schema.n_stat_columns)
        node.on_model(0.0, msg)  # type: ignore[arg-type]
        count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    one_compute_thread()
    base = Path(tempfile.mkdtemp(prefix="gossipd-bench-"))
    config = base / "unlimited.toml"
    config.write_text("sender_rate = 1e9  # this bench measures the trainer, not the rate limit\n")
    print(f"one gossipd on 127.0.0.1, digits share {SHARE}, {args.concurrency} concurrent senders, "
          f"{args.seconds:g} s per model")
    print(f"{'model':>6} {'params':>10} {'body':>10} {'HTTP merged/s':>14} {'busy 503/s':>11} "
          f"{'in-process/s':>13} {'ratio':>6}")
    for label, spec in MODELS:
        proc = DaemonProc(base / label, ["--config", str(config), "--model", spec, "--share", SHARE,
                                         "--gossip-interval", "3600", "--log-level", "WARNING"]).start()
        try:
            url = proc.wait_ready()
            with urllib.request.urlopen(url + "/v1/status") as resp:
                status = json.loads(resp.read())
            n, fp = status["model"]["params"], status["model"]["fingerprint"]
            params = np.random.default_rng(0).normal(0, 0.01, n).astype(np.float32)
            k = status["model"]["stat_columns"]  # the sender's scaling statistics (network scaling)
            stats = FeatureStats(100.0, np.zeros(k), np.ones(k)) if k else None
            bodies = [wire.encode(ModelMessage(f"http://127.0.0.1:{1 + i}", fp, 1000.0, params, stats),
                                  cluster="default") for i in range(args.concurrency)]
            body = bodies[0]
            http = asyncio.run(load(url, bodies, args.seconds))
        finally:
            stop_all([proc])
        inproc = in_process_rate(spec, body, fp, n, min(args.seconds, 4.0))
        print(f"{label:>6} {n:>10,} {len(body):>10,} {http['merged_per_s']:>14.1f} {http['busy_per_s']:>11.1f} "
              f"{inproc:>13.1f} {http['merged_per_s'] / inproc:>6.2f}")
        if http["errors"]:
            print(f"  warning: {http['errors']} unexpected answers")


if __name__ == "__main__":
    main()

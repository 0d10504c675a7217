"""Many real daemons on one machine: memory, CPU per gossip interval, time to accuracy.

Starts N gossipd processes on 127.0.0.1 (digits/logreg by default, shares
1/N..N/N cut by ``--split``, all joined through the first), then once every
daemon serves measures:

- total memory: the sum of ``VmRSS`` (shared libraries counted once per
  process) and of ``Pss`` (``/proc/PID/smaps_rollup``: shared pages split
  among their users, what the processes really cost together);
- CPU per daemon per gossip interval: user + system time of every daemon
  (``/proc/PID/stat``) over the run, divided by N and by the number of gossip
  intervals it lasted;
- time to ``--target`` mean accuracy: each daemon's current model (``GET
  /v1/model``) scored on the whole digits test set, every second, from the
  moment all daemons serve (and from the first exec).

    python bench/many_daemons.py [--nodes 50] [--interval 1.0] [--split labels] [--target 0.9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from gossipd import wire
from gossipd.core.learner import make_learner
from gossipd.core.messages import ModelMessage
from gossipd.core.state import ModelState
from gossipd.data import load_dataset, make_scaling
from gossipd.testing import DaemonProc, start_network, stop_all

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def kb(path: str, key: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def memory_mb(procs: list[DaemonProc]) -> tuple[float, float]:
    """(sum of VmRSS, sum of Pss) in MB."""
    rss = pss = 0
    for p in procs:
        assert p.proc is not None
        rss += kb(f"/proc/{p.proc.pid}/status", "VmRSS")
        pss += kb(f"/proc/{p.proc.pid}/smaps_rollup", "Pss")
    return rss / 1024, pss / 1024


class Scorer:
    """Every daemon's current model on the whole test set (one batched evaluation)."""

    def __init__(self, dataset_name: str, spec: str) -> None:
        self.ds = load_dataset(dataset_name)
        self.learner = make_learner(spec, self.ds.schema, scaling=make_scaling("network", self.ds.schema))

    def mean_accuracy(self, procs: list[DaemonProc]) -> tuple[float, int]:
        states, stats = [], []
        for p in procs:
            req = urllib.request.Request(p.url + "/v1/model?format=msgpack",
                                         headers={"Authorization": f"Bearer {p.admin_token}"})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    msg = wire.decode(resp.read(), cluster="default")
            except (OSError, wire.WireError):
                continue
            assert isinstance(msg, ModelMessage)
            states.append(ModelState(msg.params, msg.age))
            stats.append(msg.stats)
        if not states:
            return 0.0, 0
        acc = self.learner.evaluate_many(states, self.ds.X_test, self.ds.y_test, stats)
        return float(np.mean(acc)), len(states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="gossip interval (s)")
    parser.add_argument("--split", default="labels")
    parser.add_argument("--model", default="logreg")
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--time-limit", type=float, default=300.0)
    ns = parser.parse_args()
    print(f"{ns.nodes} gossipd on 127.0.0.1: digits/{ns.model}, {ns.split} split, gossip every {ns.interval:g} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    scorer = Scorer("digits", ns.model)
    args = ["--model", ns.model, "--gossip-interval", str(ns.interval), "--shuffle-interval", "2",
            "--log-level", "WARNING"]
    with tempfile.TemporaryDirectory() as tmp:
        t_exec = time.monotonic()
        procs = start_network(Path(tmp), ns.nodes, extra=args, split=ns.split, timeout=300)
        try:
            t_ready = time.monotonic()
            pids = [p.proc.pid for p in procs if p.proc is not None]
            cpu0 = [cpu_seconds(pid) for pid in pids]
            rss_ready, pss_ready = memory_mb(procs)
            print(f"  all {ns.nodes} serving {t_ready - t_exec:.1f} s after the first exec; "
                  f"memory then: VmRSS sum {rss_ready:.0f} MB, Pss sum {pss_ready:.0f} MB")
            reached = None
            acc, seen = 0.0, 0
            while time.monotonic() - t_ready < ns.time_limit:
                acc, seen = scorer.mean_accuracy(procs)
                now = time.monotonic()
                if reached is None and seen == ns.nodes and acc >= ns.target:
                    reached = now
                    break
                time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
            t_end = time.monotonic()
            cpu1 = [cpu_seconds(pid) for pid in pids]
            rss, pss = memory_mb(procs)
            statuses = [p.url for p in procs]
        finally:
            stop_all(procs)
    window = t_end - t_ready
    intervals = window / ns.interval
    per = [(b - a) / intervals * 1000 for a, b in zip(cpu0, cpu1)]
    print(f"  mean accuracy {acc:.3f} over {seen} models at the end ({window:.1f} s after all served)")
    if reached is None:
        print(f"  target {ns.target} not reached within {ns.time_limit:g} s")
    else:
        print(f"  time to {ns.target} mean accuracy: {reached - t_ready:.1f} s after all served "
              f"({(reached - t_ready) / ns.interval:.0f} gossip intervals), {reached - t_exec:.1f} s after the first exec")
    print(f"  memory at the end: VmRSS sum {rss:.0f} MB ({rss / len(statuses):.1f} MB per daemon), "
          f"Pss sum {pss:.0f} MB ({pss / len(statuses):.1f} MB per daemon)")
    print(f"  CPU per daemon per gossip interval: mean {statistics.mean(per):.1f} ms, "
          f"median {statistics.median(per):.1f} ms, max {max(per):.1f} ms "
          f"(all daemons together: {sum(b - a for a, b in zip(cpu0, cpu1)) / window:.2f} cores)")


if __name__ == "__main__":
    main()

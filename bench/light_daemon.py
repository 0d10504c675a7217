"""How light one gossipd is: start-up to /readyz and resident memory once ready.

Starts a seed daemon, then ``--runs`` times a second daemon joined to it (the
same model and data; ``/readyz`` needs a peer, so a lone daemon is never
ready) and measures, per run:

- exec -> first ``GET /healthz`` answered 200 (the port is bound);
- exec -> first ``GET /readyz`` answered 200 (model loaded and a peer known);
- ``VmRSS`` and ``VmHWM`` (peak) from ``/proc/PID/status`` one second after
  ``/readyz``, the daemon idle (gossip every hour).

``--model`` and ``--dataset`` pick what the daemons run (default digits/logreg,
the issue 13 target: <= 120 MB, <= 2 s).

    python bench/light_daemon.py [--runs 3] [--model logreg] [--dataset digits]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from gossipd.testing import DaemonProc, answers_200, stop_all


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def wait_200(url: str, proc: DaemonProc, timeout: float = 120.0) -> float:
    """Monotonic time at which ``url`` first answered 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers_200(url, timeout=0.5):
            return time.monotonic()
        if not proc.alive():
            raise RuntimeError(f"gossipd exited:\n{proc.log()[-2000:]}")
        time.sleep(0.005)
    raise TimeoutError(url)


def one_run(base: Path, k: int, seed_url: str, args: list[str]) -> dict[str, float]:
    proc = DaemonProc(base / f"j{k}", [*args, "--share", "2/2", "--join", seed_url])
    t0 = time.monotonic()
    proc.start()
    try:
        url = proc.wait_listening()
        health = wait_200(url + "/healthz", proc) - t0
        serving = wait_200(url + "/v1/status", proc) - t0
        ready = wait_200(url + "/readyz", proc) - t0
        time.sleep(1.0)
        assert proc.proc is not None
        pid = proc.proc.pid
        rss, hwm = proc_status_kb(pid, "VmRSS"), proc_status_kb(pid, "VmHWM")
    finally:
        stop_all([proc])
    return {"healthz": health, "serving": serving, "readyz": ready, "rss_mb": rss / 1024, "hwm_mb": hwm / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="logreg")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--shuffle-interval", type=float, default=1.0,
                        help="the joiner's first shuffle (its first peer) comes within one interval")
    ns = parser.parse_args()
    args = ["--model", ns.model, "--dataset", ns.dataset, "--gossip-interval", "3600",
            "--shuffle-interval", str(ns.shuffle_interval), "--log-level", "WARNING"]
    print(f"gossipd {ns.dataset}/{ns.model}: {ns.runs} runs joined to one seed, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        seed = DaemonProc(base / "seed", [*args, "--share", "1/2"]).start()
        try:
            seed_url = seed.wait_ready()
            rows = [one_run(base, k, seed_url, args) for k in range(ns.runs)]
        finally:
            stop_all([seed])
    for key, label, unit in (("healthz", "exec -> /healthz 200", "s"), ("serving", "exec -> /v1/status 200", "s"),
                             ("readyz", "exec -> /readyz 200", "s"),
                             ("rss_mb", "VmRSS 1 s after /readyz", "MB"), ("hwm_mb", "VmHWM (peak)", "MB")):
        values = [r[key] for r in rows]
        print(f"  {label:26s} median {statistics.median(values):7.2f} {unit:2s} "
              f"(min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()

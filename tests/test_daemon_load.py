"""Real daemons on 127.0.0.1 under stress (issue 10 acceptance): overflowing models, a flood of
pushes, a background loop that dies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import DaemonProc, admin_get, get_json, post, start_network, stop_all, wait_for  # noqa: E402

from gossipd import wire  # noqa: E402
from gossipd.core.messages import ModelMessage  # noqa: E402
from gossipd.core.scaling import FeatureStats  # noqa: E402
from gossipd.daemon.supervisor import EXIT_TASK_DIED  # noqa: E402
from gossipd.daemon.transport import outcome_of_status  # noqa: E402
from gossipd.testing import flood  # noqa: E402

pytestmark = pytest.mark.timeout(240)

ASYNC = {"Prefer": "respond-async"}


def model_body(status: dict[str, Any], sender: str, params: np.ndarray, age: float = 100.0) -> bytes:
    k = status["model"]["stat_columns"]
    stats = FeatureStats(1.0, np.zeros(k), np.ones(k)) if k else None
    return wire.encode(ModelMessage(sender, status["model"]["fingerprint"], age, params, stats),
                       cluster=status["cluster"])


def processed(url: str) -> int:
    """Models the node has finished with: merged and trained, or discarded."""
    counters = get_json(url + "/v1/status")["counters"]
    return counters["merged"] + counters["discarded"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_overflowing_models_leave_a_finite_model_and_a_kept_checkpoint(tmp_path: Path) -> None:
    """Issue 10: a fresh node sent two valid models with every parameter at float32's maximum
    ended with 650/650 parameters inf, then NaN after the next honest model, and set its
    checkpoint aside on restart. Now both are discarded and the honest one is merged."""
    proc = DaemonProc(tmp_path / "node", ["--share", "1/4", "--gossip-interval", "3600",
                                          "--shuffle-interval", "3600"]).start()
    try:
        url = proc.wait_ready()
        status = get_json(url + "/v1/status")
        n = status["model"]["params"]
        huge = np.full(n, np.finfo(np.float32).max, np.float32)
        honest = np.random.default_rng(0).normal(0, 0.01, n).astype(np.float32)
        for i, params in enumerate((huge, huge, honest)):
            code, body = post(url + "/v1/gossip/model", model_body(status, f"http://127.0.0.1:{9000 + i}", params),
                              headers=ASYNC)
            assert code == 202, body  # queued, answered at once
            # Wait until it is through: 'received' counts a model when its merge starts.
            assert wait_for(lambda: processed(url) == i + 1, 30)
        after = get_json(url + "/v1/status")
        assert after["counters"]["discarded"] == 2 and after["counters"]["merged"] == 1
        msg = wire.decode(admin_get(proc, "/v1/model"), cluster="default")
        assert isinstance(msg, ModelMessage) and np.isfinite(msg.params).all() and np.abs(msg.params).max() < 1e6
        assert proc.terminate() == 0
        proc.start()
        proc.wait_ready()
        assert not list((tmp_path / "node").glob("checkpoint.msgpack.rejected-*"))
        resumed = wire.decode(admin_get(proc, "/v1/model"), cluster="default")
        assert resumed.age == msg.age and np.array_equal(resumed.params, msg.params)
        assert "resumed from checkpoint" in proc.log()
    finally:
        stop_all([proc])


def test_a_thousand_concurrent_pushes_drop_no_peer(tmp_path: Path) -> None:
    """1000 pushes at once against one daemon, each from its own sender over its own
    connection: every one is answered within the sender's 5 s timeout with 202, 429 or 503 (all
    'alive'), /healthz answers every probe within its 1 s client timeout, a real peer pushing
    meanwhile keeps the daemon in its view with no failed send, and memory stays bounded.
    The figures are printed (``pytest -s``); bench/flood.py measures them alone."""
    a, b = start_network(tmp_path, 2)
    try:
        url = a.url
        def b_knows_a() -> bool:
            return a.url in [p["address"] for p in get_json(b.url + "/v1/peers")["peers"]]

        assert wait_for(b_knows_a, 30)
        status = get_json(url + "/v1/status")
        n = status["model"]["params"]
        rng = np.random.default_rng(1)
        bodies = [model_body(status, f"http://127.0.0.1:{20000 + i}", rng.normal(0, 0.01, n).astype(np.float32))
                  for i in range(1000)]
        b_before = get_json(b.url + "/v1/status")["counters"]
        rss_before = rss_kib(a.proc.pid)
        report = asyncio.run(flood(url, bodies, timeout=5.0, probe_timeout=1.0))
        time.sleep(1.0)
        rss_after = rss_kib(a.proc.pid)
        b_after = get_json(b.url + "/v1/status")["counters"]
        inbox = get_json(url + "/v1/status")["inbox"]
        print(f"\n1000 concurrent pushes in {report.seconds:.2f} s: answers {dict(report.answers)}, failures "
              f"{dict(report.failures)}; /healthz {len(report.probe_latencies)} probes, p50 "
              f"{report.probe_quantile(0.5) * 1000:.1f} ms, p99 {report.probe_quantile(0.99) * 1000:.1f} ms, "
              f"max {max(report.probe_latencies) * 1000:.1f} ms, {report.probe_failures} over 1 s; RSS "
              f"{rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB; inbox {inbox}")
        assert sum(report.answers.values()) == 1000 and not report.failures
        assert all(outcome_of_status(s).alive for s in report.answers)  # no sender would drop it
        assert report.answers[202] >= 32  # at least a queue's worth was taken
        assert report.probe_failures == 0 and len(report.probe_latencies) >= 5
        assert rss_after - rss_before < 100 * 1024  # KiB; the queue holds at most max_pending models
        assert b_after["send_failures"] == b_before["send_failures"]
        assert b_knows_a()
    finally:
        stop_all([a, b])


def test_a_background_loop_that_dies_ends_the_process_non_zero(tmp_path: Path) -> None:
    """A loop that raises (here the log loop, from a fault injected before start) is logged and
    ends the process with status 70 after the final checkpoint, so systemd restarts it: it
    used to stop for good while /healthz and the watchdog kept saying all was well."""
    inject = ("import sys\n"
              "from gossipd.daemon import driver\n"
              "def broken(self): raise RuntimeError('injected fault')\n"
              "driver.Daemon._log_view_changes = broken\n"
              "from gossipd.daemon.main import main\n"
              "sys.argv = ['gossipd', *sys.argv[1:]]\n"
              "main()\n")
    state = tmp_path / "node"
    run = subprocess.run([sys.executable, "-c", inject, "--listen", "127.0.0.1:0", "--state-dir", str(state),
                          "--share", "1/4"], capture_output=True, text=True, timeout=120)
    assert run.returncode == EXIT_TASK_DIED, run.stderr[-2000:]
    assert "background task logs died (RuntimeError: injected fault)" in run.stderr
    assert "checkpoint written" in run.stderr and (state / "checkpoint.msgpack").exists()

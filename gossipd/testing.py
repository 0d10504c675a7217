"""Start and stop gossipd daemons for the demo, tests and benchmarks.

Real processes: each daemon listens on 127.0.0.1 port 0 and writes its URL to
``STATE_DIR/endpoint`` as soon as the port is bound, so callers never guess
ports; ``wait_ready`` then polls until the node serves (its model is loaded).

In one process: ``start_memory_daemons`` runs daemons over a
``MemoryNetwork`` (drops, delays, partitions) on a given clock, usually a
virtual one (``gossipd.daemon.clock.run_virtual``); ``components`` says how
many pieces their views make.

``flood`` pushes many models at one daemon at once while probing its
``/healthz``: what the load test and ``bench/flood.py`` measure.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gossipd.daemon.clock import Clock
    from gossipd.daemon.driver import Daemon
    from gossipd.daemon.memory_transport import MemoryNetwork

GOSSIPD = [sys.executable, "-m", "gossipd"]


@dataclass
class DaemonProc:
    """One gossipd child process; output goes to ``STATE_DIR.log``."""

    state_dir: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    #: run in the child before exec (e.g. resource limits); None for none
    preexec_fn: Callable[[], None] | None = None
    #: how to reach a daemon that serves HTTPS (its CA, a client certificate for mutual TLS)
    ssl_context: ssl.SSLContext | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.state_dir.with_suffix(".log")

    def start(self) -> DaemonProc:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "endpoint").unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)  # the children are not the service systemd watches
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*GOSSIPD, "--listen", "127.0.0.1:0", "--state-dir", str(self.state_dir), *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, preexec_fn=self.preexec_fn)
        return self

    def wait_listening(self, timeout: float = 90.0) -> str:
        """The daemon's URL, once its port is bound (it may still be loading its model)."""
        endpoint = self.state_dir / "endpoint"
        self._wait(lambda: endpoint.exists() and bool(endpoint.read_text().strip()), timeout, "listen")
        self.url = endpoint.read_text().strip()
        return self.url

    def wait_ready(self, timeout: float = 90.0) -> str:
        """The daemon's URL, once it serves: model loaded, /v1/status answers 200."""
        deadline = time.monotonic() + timeout
        url = self.wait_listening(timeout)
        self._wait(lambda: answers_200(url + "/v1/status", context=self.ssl_context),
                   max(0.1, deadline - time.monotonic()), "serve")
        return url

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gossipd exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if done():
                return
            time.sleep(0.05)
        raise TimeoutError(f"gossipd did not {what} within {timeout:.0f}s:\n{self.log()[-3000:]}")

    @property
    def admin_token(self) -> str:
        """The token its admin endpoints want (the default STATE_DIR/admin-token, made at first start)."""
        return (self.state_dir / "admin-token").read_text().strip()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def answers_200(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None) -> bool:
    """True if GET ``url`` answers 200 now (False on any error or other status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_network(base: Path, n: int, *, extra: list[str] | None = None, split: str = "iid",
                  timeout: float = 90.0) -> list[DaemonProc]:
    """n daemons holding shares 1/n..n/n of the data, all joined through the first.

    The others start as soon as the first has bound its port (they load their
    models meanwhile, and retry a seed that still says 'starting')."""
    procs: list[DaemonProc] = []
    try:
        first = DaemonProc(base / "n1", ["--share", f"1/{n}", "--split", split, *(extra or [])]).start()
        procs.append(first)
        seed = first.wait_listening(timeout)
        for k in range(2, n + 1):
            procs.append(DaemonProc(base / f"n{k}", ["--share", f"{k}/{n}", "--split", split,
                                                     "--join", seed, *(extra or [])]).start())
        for p in procs:
            p.wait_ready(timeout)
    except BaseException:
        for p in procs:
            p.kill()
        raise
    return procs


def stop_all(procs: list[DaemonProc], timeout: float = 20.0) -> None:
    """SIGTERM everyone, wait, then SIGKILL whoever is still there."""
    for p in procs:
        if p.alive():
            assert p.proc is not None
            p.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        if p.proc is None:
            continue
        try:
            p.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


# -- daemons in one process -------------------------------------------------------------------


async def start_memory_daemons(base: Path, n: int, network: MemoryNetwork, clock: Clock, *, seed: int = 0,
                               overrides: dict[str, Any] | None = None) -> list[Daemon]:
    """``n`` daemons at ``http://n1.test:7070`` ... on ``network``, holding digits shares 1/n..n/n,
    joined through the first, each seeded from ``seed``; defaults for everything else but
    ``overrides`` (dotted setting keys)."""
    from gossipd.daemon.config import load_config
    from gossipd.daemon.driver import Daemon

    addresses = [f"http://n{k}.test:7070" for k in range(1, n + 1)]
    daemons: list[Daemon] = []
    for k, address in enumerate(addresses):
        config = load_config(overrides={"state_dir": str(base / f"n{k + 1}"), "data.share": f"{k + 1}/{n}",
                                        "seed": seed * 1000 + k, "join": addresses[:1] if k else [],
                                        **(overrides or {})})
        daemon = Daemon(config, transport=network.transport(address, timeout=config.request_timeout), clock=clock)
        await daemon.start()
        daemons.append(daemon)
    return daemons


def components(daemons: Sequence[Daemon]) -> list[int]:
    """Sizes of the pieces the daemons' views make (links taken both ways), largest first."""
    import numpy as np

    from gossipd.overlay import components as sizes

    index = {d.address: i for i, d in enumerate(daemons)}
    edges = [(i, index[p]) for i, d in enumerate(daemons) for p in d.sampler.peers() if p in index]
    return sizes(len(daemons), edges, np.ones(len(daemons), dtype=bool))


def partition_then_heal(base: Path, n: int = 6, *, mix: float = 60.0, cut: float = 240.0, seed: int = 1,
                        overrides: dict[str, Any] | None = None, patience: float = 120.0) -> dict[str, Any]:
    """``n`` in-memory daemons on a virtual clock mix for ``mix`` seconds, are cut in two halves
    for ``cut`` seconds, then the cut ends. Returns the overlay's pieces before (``mixed``) and at
    the end of the cut (``during``), the view entries pointing across then (``across``), and the
    seconds after the cut until the overlay was one piece again (``healed_after``, checked every
    second; None if not within ``patience``)."""
    import asyncio

    from gossipd.daemon.clock import VirtualClock, run_virtual
    from gossipd.daemon.memory_transport import MemoryNetwork

    async def main(clock: VirtualClock) -> dict[str, Any]:
        net = MemoryNetwork(seed=seed)
        daemons = await start_memory_daemons(base, n, net, clock, seed=seed, overrides=overrides)
        try:
            await asyncio.sleep(mix)
            mixed = components(daemons)
            half = n // 2
            left, right = {d.address for d in daemons[:half]}, {d.address for d in daemons[half:]}
            net.partition(left, right)
            await asyncio.sleep(cut)
            during = components(daemons)
            across = sum(p in (right if d.address in left else left) for d in daemons for p in d.sampler.peers())
            net.heal()
            ended = clock.now()
            healed = None
            while healed is None and clock.now() - ended < patience:
                await asyncio.sleep(1.0)
                if components(daemons) == [n]:
                    healed = clock.now() - ended
            return {"mixed": mixed, "during": during, "across": across, "healed_after": healed}
        finally:
            for d in daemons:
                await d.stop()

    return run_virtual(main)


# -- load -----------------------------------------------------------------------------------


@dataclass
class FloodReport:
    """What ``flood`` saw: answers by status, sends that failed (by exception), and the
    latencies of the ``/healthz`` probes made meanwhile (a probe without an answer within
    its timeout counts in ``probe_failures``)."""

    answers: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    probe_latencies: list[float] = field(default_factory=list)
    probe_failures: int = 0
    seconds: float = 0.0

    def probe_quantile(self, q: float) -> float:
        xs = sorted(self.probe_latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def flood(url: str, bodies: Sequence[bytes], *, timeout: float = 5.0, probe_timeout: float = 1.0,
                probe_interval: float = 0.01) -> FloodReport:
    """POST every body to ``url``'s model endpoint at once (one connection each, as that many
    peers would, with ``Prefer: respond-async``, the request timeout ``timeout``), while a
    thread of its own probes ``/healthz`` every ``probe_interval`` with ``probe_timeout``
    (its own thread, so the probes wait for the daemon, not for this process's event loop)."""
    import asyncio
    import threading

    import aiohttp

    report = FloodReport()
    done = threading.Event()
    headers = {"Content-Type": "application/x-msgpack", "Prefer": "respond-async"}

    async def push(session: aiohttp.ClientSession, body: bytes) -> None:
        try:
            async with session.post(url + "/v1/gossip/model", data=body, headers=headers) as resp:
                await resp.read()
                report.answers[resp.status] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            report.failures[type(exc).__name__] += 1

    def probe() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=probe_timeout) as resp:
                    resp.read()
                report.probe_latencies.append(time.perf_counter() - t0)
            except (urllib.error.URLError, OSError):
                report.probe_failures += 1
            done.wait(probe_interval)

    prober = threading.Thread(target=probe, name="healthz-probe")
    t0 = time.perf_counter()
    prober.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                         connector=aiohttp.TCPConnector(limit=0, force_close=True)) as pushes:
            await asyncio.gather(*(push(pushes, b) for b in bodies))
    finally:
        done.set()
        prober.join()
    report.seconds = time.perf_counter() - t0
    return report

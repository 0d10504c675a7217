"""Start and stop real gossipd processes on one machine (demo, tests, benchmarks).

Each daemon listens on 127.0.0.1 port 0 and writes its URL to
``STATE_DIR/endpoint`` once it serves, so callers never guess ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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

    def wait_ready(self, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        endpoint = self.state_dir / "endpoint"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gossipd exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if endpoint.exists():
                self.url = endpoint.read_text().strip()
                return self.url
            time.sleep(0.1)
        raise TimeoutError(f"gossipd did not come up in {timeout}s:\n{self.log()[-3000:]}")

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


def start_network(base: Path, n: int, *, extra: list[str] | None = None, split: str = "iid",
                  timeout: float = 90.0) -> list[DaemonProc]:
    """n daemons holding parts 1/n..n/n of the data, all joined through the first."""
    procs: list[DaemonProc] = []
    try:
        first = DaemonProc(base / "n1", ["--share", f"1/{n}", "--split", split, *(extra or [])]).start()
        procs.append(first)
        seed = first.wait_ready(timeout)
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

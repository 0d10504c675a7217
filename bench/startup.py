"""How fast one gossipd comes up and goes down, and how fast the CLI answers.

Starts real daemons on 127.0.0.1 (a fixed free port, so nothing waits for an
endpoint file) and measures, per run:

- exec -> first ``GET /healthz`` answered 200 (the port is bound);
- exec -> first ``GET /v1/status`` answered 200 (data and model loaded);
- SIGTERM -> process exit, and the final "checkpoint written" log line -> exit;

then the wall time of a few ``gossip`` commands (``--version``,
``status --help``, ``status URL``) against a bare ``python -c pass`` measured in
the same run, since this machine's load moves every figure.

    python bench/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from gossipd.testing import answers_200

GOSSIPD = [sys.executable, "-m", "gossipd"]
GOSSIP = str(Path(sys.executable).with_name("gossip"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> float:
    """Seconds (monotonic) at which ``url`` first answered 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers_200(url, timeout=0.5):
            return time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"gossipd exited with {proc.returncode}")
        time.sleep(0.01)
    raise TimeoutError(url)


def checkpoint_line_time(log: str) -> float | None:
    """Unix time of the 'checkpoint written' line (logging's asctime, ms resolution)."""
    for line in log.splitlines():
        if "checkpoint written" in line:
            stamp = " ".join(line.split()[:2])
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def one_run(base: Path, k: int) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = base / f"s{k}"
    log_path = base / f"s{k}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen([*GOSSIPD, "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
                                 "--gossip-interval", "3600", "--shuffle-interval", "3600"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            health = poll(url + "/healthz", proc) - t0
            serving = poll(url + "/v1/status", proc) - t0
            time.sleep(0.5)
            t_term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
            t_exit_mono, t_exit_wall = time.monotonic(), time.time()
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log_path.read_text()
    cp = checkpoint_line_time(text)
    if code != 0 or cp is None:
        raise RuntimeError(f"exit {code}, checkpoint line {'found' if cp else 'missing'}:\n{text[-2000:]}")
    return {"healthz": health, "serving": serving, "sigterm_to_exit": t_exit_mono - t_term,
            "checkpoint_to_exit": t_exit_wall - cp}


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.monotonic()
        subprocess.run(cmd, capture_output=True)
        times.append(time.monotonic() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"gossipd start-up and shutdown, {args.runs} runs, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_run(Path(tmp), k) for k in range(args.runs)]
    for key, label in (("healthz", "exec -> /healthz 200"), ("serving", "exec -> /v1/status 200"),
                       ("sigterm_to_exit", "SIGTERM -> exit"), ("checkpoint_to_exit", "checkpoint line -> exit")):
        values = [r[key] for r in rows]
        print(f"  {label:28s} median {statistics.median(values):6.2f} s   "
              f"(min {min(values):.2f}, max {max(values):.2f})")

    print("gossip CLI, median wall of 5 runs")
    base = wall([sys.executable, "-c", "pass"], 5)
    print(f"  {'python -c pass (baseline)':28s} {base:6.2f} s")
    port = free_port()
    env = {**os.environ}
    env.pop("NOTIFY_SOCKET", None)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([*GOSSIPD, "--listen", f"127.0.0.1:{port}", "--state-dir", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            poll(f"http://127.0.0.1:{port}/v1/status", proc)
            for cmd in (["--version"], ["status", "--help"], ["status", f"http://127.0.0.1:{port}"]):
                t = wall([GOSSIP, *cmd], 5)
                print(f"  {'gossip ' + ' '.join(cmd):28s} {t:6.2f} s   ({t / base:.1f}x python -c pass)")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


if __name__ == "__main__":
    main()

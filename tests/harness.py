"""Test helpers around real gossipd processes (see gossipd/launcher.py)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gossipd.testing import DaemonProc, start_network as _start_network, stop_all

# Short periods so that tests see many rounds in a few seconds.
FAST = ["--gossip-interval", "0.3", "--shuffle-interval", "0.5"]

__all__ = ["DaemonProc", "FAST", "admin_get", "get_json", "post", "start_network", "stop_all", "wait_for"]


def start_network(base: Path, n: int, *, extra: list[str] | None = None, split: str = "iid") -> list[DaemonProc]:
    """n daemons on digits parts 1/n..n/n joined through the first; FAST periods unless overridden."""
    return _start_network(base, n, extra=[*FAST, *(extra or [])], split=split)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def admin_get(proc: DaemonProc, path: str, timeout: float = 30.0) -> bytes:
    """GET an admin endpoint of ``proc`` with its token."""
    req = urllib.request.Request(proc.url + path, headers={"Authorization": f"Bearer {proc.admin_token}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def post(url: str, body: bytes | bytearray, content_type: str = "application/x-msgpack", timeout: float = 10.0,
         token: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type, **(headers or {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=bytes(body), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_for(predicate: Any, timeout: float, interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except OSError:
            last = None
        if last:
            return last
        time.sleep(interval)
    return last

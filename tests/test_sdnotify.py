"""sd_notify client against a real AF_UNIX datagram socket, as systemd would bind it."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossipd.daemon.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound in a temp dir, with NOTIFY_SOCKET pointing at it."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def recv(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def test_messages_are_exact_datagrams(notify_socket: socket.socket) -> None:
    n = Notifier.from_env()
    assert n.enabled

    assert n.ready() is True
    assert recv(notify_socket) == b"READY=1"

    assert n.ready("listening on 127.0.0.1:7070")
    assert recv(notify_socket) == b"READY=1\nSTATUS=listening on 127.0.0.1:7070"

    assert n.watchdog()
    assert recv(notify_socket) == b"WATCHDOG=1"

    assert n.status("age 120, 7 peers")
    assert recv(notify_socket) == b"STATUS=age 120, 7 peers"

    assert n.stopping()
    assert recv(notify_socket) == b"STOPPING=1"

    assert n.stopping("checkpointing")
    assert recv(notify_socket) == b"STOPPING=1\nSTATUS=checkpointing"
    n.close()


def test_status_cannot_inject_fields(notify_socket: socket.socket) -> None:
    n = Notifier.from_env()
    n.status("bad peer\nREADY=1")
    assert recv(notify_socket) == b"STATUS=bad peer READY=1"


def test_utf8_status(notify_socket: socket.socket) -> None:
    Notifier.from_env().status("naïve Bayes ✓")
    assert recv(notify_socket) == "STATUS=naïve Bayes ✓".encode()


def test_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"gossipd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        n = Notifier.from_env()
        assert n.enabled
        assert n.ready("up")
        assert recv(sock) == b"READY=1\nSTATUS=up"
        assert n.watchdog()
        assert recv(sock) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_unset_is_a_noop(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    n = Notifier.from_env()
    assert not n.enabled
    with caplog.at_level(logging.DEBUG, logger="gossipd.daemon.sdnotify"):
        assert n.ready("x") is False
        assert n.watchdog() is False
        assert n.status("x") is False
        assert n.stopping() is False
    assert caplog.records == []
    # No socket, nobody to ping: no watchdog even if WATCHDOG_USEC leaked in.
    assert n.watchdog_interval() is None
    n.close()


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234"])
def test_unusable_address_disables(value: str) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": value})
    assert not n.enabled
    assert n.ready() is False


def test_explicit_environ_mapping(notify_socket: socket.socket) -> None:
    # from_env takes a mapping so the daemon's tests need not touch os.environ.
    n = Notifier.from_env({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]})
    assert n.ready()
    assert recv(notify_socket) == b"READY=1"


class TestWatchdogInterval:
    SOCK = {"NOTIFY_SOCKET": "/run/systemd/notify"}

    def interval(self, **env: str) -> float | None:
        return Notifier.from_env({**self.SOCK, **env}).watchdog_interval()

    def test_half_the_timeout(self) -> None:
        assert self.interval(WATCHDOG_USEC="30000000") == 15.0
        assert self.interval(WATCHDOG_USEC="1") == 0.0000005

    def test_own_pid(self) -> None:
        assert self.interval(WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid())) == 15.0

    def test_other_pid(self) -> None:
        assert self.interval(WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid() + 1)) is None

    @pytest.mark.parametrize("pid", ["", "abc"])
    def test_bad_pid(self, pid: str) -> None:
        assert self.interval(WATCHDOG_USEC="30000000", WATCHDOG_PID=pid) is None

    @pytest.mark.parametrize("usec", ["", "0", "-5", "30s", "1.5"])
    def test_bad_usec(self, usec: str) -> None:
        assert self.interval(WATCHDOG_USEC=usec) is None

    def test_missing(self) -> None:
        assert self.interval() is None

    def test_from_os_environ(self, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        assert Notifier.from_env().watchdog_interval() == 2.0


def test_vanished_socket_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    n = Notifier.from_env()
    assert n.ready()
    assert recv(sock) == b"READY=1"

    sock.close()
    path.unlink()
    with caplog.at_level(logging.DEBUG, logger="gossipd.daemon.sdnotify"):
        assert n.watchdog() is False
        assert n.watchdog() is False
        assert n.stopping() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "warn once, then stay quiet"

    # The socket comes back (systemd re-executed): sending works again.
    sock2 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock2.bind(str(path))
    sock2.settimeout(2.0)
    try:
        assert n.watchdog() is True
        assert recv(sock2) == b"WATCHDOG=1"
    finally:
        sock2.close()
        n.close()


def test_never_existing_socket(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nope")})
    assert n.enabled
    assert n.ready() is False
    assert n.watchdog() is False

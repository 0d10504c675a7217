"""A tiny sd_notify(3) client: tell systemd we are ready, alive, or stopping.

Why our own and not a library: the protocol is one datagram of ``KEY=VALUE``
lines sent to the AF_UNIX socket named by ``$NOTIFY_SOCKET``; a few lines over
:mod:`socket` do it, and a third-party package (or libsystemd through ctypes)
would be one more thing to install for a feature that is off outside systemd.

Why it matters for ``gossipd``: the unit is ``Type=notify`` with
``WatchdogSec=``. systemd only considers the service started once it receives
``READY=1`` (so ``systemctl start`` and units ordered after it wait until the
HTTP server really listens), and it kills and restarts the daemon when the
``WATCHDOG=1`` pings stop (a wedged event loop is caught even though the
process is still alive).

Outside systemd (tests, a shell, the simulator) ``NOTIFY_SOCKET`` is unset and
every call is a cheap no-op, so the daemon calls these methods unconditionally.
A notification is never worth crashing the daemon for: send failures are
logged (a warning the first time, debug afterwards) and swallowed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to one notification socket.

    Build it with :meth:`from_env` once at start-up; it snapshots the
    environment then, so later changes to ``os.environ`` do not matter.
    Safe to call from several threads (a worker thread may report status while
    the event loop pings the watchdog).
    """

    def __init__(self, address: str | None, environ: Mapping[str, str] | None = None) -> None:
        """Create a notifier for ``address`` (a ``NOTIFY_SOCKET`` value) or ``None``.

        ``address`` is a filesystem path (``/run/systemd/notify``) or an
        abstract-namespace name written with a leading ``@``. Anything else
        (empty, relative path, a scheme we do not speak such as ``vsock:``)
        disables the notifier with a warning rather than failing start-up.
        ``environ`` is consulted only for the watchdog variables.
        """
        self._env: dict[str, str] = dict(environ) if environ is not None else {}
        self._address: bytes | None = _parse_address(address)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build a notifier from ``NOTIFY_SOCKET`` (and ``WATCHDOG_*``) in ``environ``.

        ``environ`` defaults to :data:`os.environ`; tests pass a dict.
        """
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), env)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (i.e. we run under systemd)."""
        return self._address is not None

    # -- the messages -------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Send ``READY=1`` (and ``STATUS=`` if given): start-up is finished.

        Call it once the HTTP server listens, not before: ``Type=notify`` makes
        ``systemctl start`` block until this arrives.
        """
        return self.notify("READY=1", *self._status_field(status))

    def watchdog(self) -> bool:
        """Send ``WATCHDOG=1``: we are alive; call every :meth:`watchdog_interval`."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Send ``STOPPING=1`` (and ``STATUS=``): shutdown has begun.

        Lets systemd show "deactivating" while we checkpoint, instead of
        thinking the service died.
        """
        return self.notify("STOPPING=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """Send ``STATUS=text``, shown by ``systemctl status`` (one line)."""
        return self.notify(*self._status_field(text))

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, or ``None`` if no pings are wanted.

        systemd passes the watchdog timeout as ``WATCHDOG_USEC``; we ping at
        half of it (as sd_watchdog_enabled(3) recommends) so one late tick of a
        busy event loop does not get us killed. ``None`` when the notifier is
        disabled, the variable is missing, not a positive integer, or
        ``WATCHDOG_PID`` names another process (the variables were inherited
        from a parent and the watchdog is not ours to feed).
        """
        if not self.enabled:
            return None
        raw = self._env.get("WATCHDOG_USEC")
        if raw is None:
            return None
        try:
            usec = int(raw)
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
            return None
        if usec <= 0:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid is not None:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                log.warning("ignoring watchdog: WATCHDOG_PID=%r is not an integer", pid)
                return None
        return usec / 2_000_000

    # -- the transport ------------------------------------------------------

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` as one datagram, one ``KEY=VALUE`` per line.

        Returns True if the datagram was handed to the kernel, False if the
        notifier is disabled or sending failed. Never raises: the daemon must
        keep serving even if systemd's socket went away.
        """
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    sock.setblocking(False)  # never stall the event loop on a full queue
                    self._sock = sock
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                self._close_locked()  # reconnect afresh next time
                if not self._warned:
                    self._warned = True
                    log.warning("sd_notify to %r failed: %s (further failures logged at debug)",
                                self._address, exc)
                else:
                    log.debug("sd_notify to %r failed: %s", self._address, exc)
                return False
        return True

    def close(self) -> None:
        """Close the socket (a later call opens a new one)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    @staticmethod
    def _status_field(status: str | None) -> tuple[str, ...]:
        # A newline would end the STATUS= line and start a new field: a peer URL
        # or an error message in the status must never be able to forge READY=1.
        if status is None:
            return ()
        return ("STATUS=" + " ".join(status.splitlines()),)

    def __repr__(self) -> str:
        return f"Notifier(address={self._address!r})"


def _parse_address(address: str | None) -> bytes | None:
    """Turn a ``NOTIFY_SOCKET`` value into a sendto() address, or None."""
    if not address:
        return None
    if address.startswith("@"):
        # Abstract namespace: the kernel name starts with a NUL byte, not "@".
        return b"\0" + os.fsencode(address[1:])
    if address.startswith("/"):
        return os.fsencode(address)
    log.warning("ignoring NOTIFY_SOCKET=%r: not an absolute path or @abstract name", address)
    return None

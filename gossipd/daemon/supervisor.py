"""The daemon's background loops, watched: one that dies stops the process, loudly.

A loop (timers, trainer, checkpoints, evaluation, logs, data, watchdog) that
raises, or returns while the daemon is not stopping, is a node that silently
stopped doing part of its job while ``/healthz`` and the watchdog said all was
well. :class:`Supervisor` runs each loop as a named task; when one ends
unexpectedly it logs why (with the traceback) and calls ``on_death``, and the
driver stops and exits non-zero (``EXIT_TASK_DIED``), so systemd
(``Restart=on-failure``) restarts it. ``alive()`` tells the watchdog whether
every loop still runs: it pings only then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["EXIT_TASK_DIED", "Supervisor"]

log = logging.getLogger("gossipd")

#: The exit status after a background loop died (sysexits' EX_SOFTWARE: an internal error).
EXIT_TASK_DIED = 70


class Supervisor:
    """Named long-running tasks; the first unexpected end is ``failure``."""

    def __init__(self, on_death: Callable[[str], None], stopping: Callable[[], bool]) -> None:
        """``on_death(name)``: a loop ended unexpectedly; ``stopping()``: True once the daemon
        is shutting down (loops then end by returning or being cancelled, as expected)."""
        self._on_death = on_death
        self._stopping = stopping
        self._loops: dict[str, asyncio.Task[Any]] = {}
        #: "NAME: why" of the first loop that died, or None
        self.failure: str | None = None

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        if name in self._loops:
            raise ValueError(f"a loop named {name!r} runs already")
        task = asyncio.get_running_loop().create_task(coro, name=f"gossipd-{name}")
        self._loops[name] = task
        task.add_done_callback(lambda t: self._ended(name, t))
        return task

    def alive(self) -> bool:
        """Every loop still runs."""
        return all(not t.done() for t in self._loops.values())

    def _ended(self, name: str, task: asyncio.Task[Any]) -> None:
        if self._stopping() and (task.cancelled() or task.exception() is None):
            return
        if task.cancelled():
            why, exc = "cancelled", None
        else:
            exc = task.exception()
            why = f"{type(exc).__name__}: {exc}" if exc is not None else "returned"
        if self.failure is None:
            self.failure = f"{name}: {why}"
        log.critical("background task %s died (%s); stopping so that the service manager restarts the node",
                     name, why, exc_info=exc)
        self._on_death(name)

    async def stop(self) -> None:
        """Cancel every loop and wait for them (call once ``stopping()`` is true)."""
        for task in self._loops.values():
            task.cancel()
        await asyncio.gather(*self._loops.values(), return_exceptions=True)

"""Where a daemon gets its time: the wall clock, or a virtual one for tests.

The driver reads every time through a :class:`Clock`: ``now()`` (monotonic
seconds: the node's timers, rate limits, uptime, log summaries) and
``wall()`` (Unix seconds: seal timestamps, which other nodes compare with
their own clocks, and the times status reports). It sleeps with
``asyncio.sleep``, so the event loop's clock and ``now()`` must agree.

- :class:`SystemClock` (the default): ``time.monotonic`` (what asyncio's loop
  uses) and ``time.time``.
- :class:`VirtualClock` on a :class:`VirtualTimeLoop` (tests, ``run_virtual``):
  time stands still while anything is ready to run and jumps to the next timer
  when nothing is, so minutes of several daemons' gossip run in a moment of
  CPU, deterministically. Blocking work handed to an executor (training,
  checkpoints) runs inline there: it takes no virtual time, and no thread
  finishes while virtual time has jumped past it. ``wall()`` is a fixed epoch
  plus the virtual time, so seals carry wall-clock-like seconds that every
  daemon on the loop agrees on (the replay window counts virtual seconds).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

__all__ = ["Clock", "SystemClock", "VirtualClock", "VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds; the running event loop's ``time()``."""

    def wall(self) -> float:
        """Unix seconds."""


class SystemClock:
    """The real clocks (asyncio's default loop reads ``time.monotonic`` too)."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class VirtualClock:
    """The time of a :class:`VirtualTimeLoop`; ``wall()`` = ``epoch`` + that."""

    def __init__(self, loop: asyncio.AbstractEventLoop, epoch: float = 1.7e9) -> None:
        self.loop = loop
        self.epoch = epoch

    def now(self) -> float:
        return self.loop.time()

    def wall(self) -> float:
        return self.epoch + self.loop.time()


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Never waits for timers: when nothing is ready, reports that ``timeout`` passed."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        super().__init__()
        self._advance = advance

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # no timer at all: only I/O can wake us; wait for it for real
            return super().select(None)
        events = super().select(0)
        if not events and timeout > 0:
            self._advance(timeout)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time (see the module doc). Sockets still work (for real,
    without waiting); executors run their work inline."""

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        super().__init__(selector=_JumpingSelector(self._advance))

    def _advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    def time(self) -> float:
        return self._virtual_now

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # handed to the awaiting task, as an executor would
            future.set_exception(exc)
        return asyncio.wrap_future(future, loop=self)


def run_virtual(main: Callable[[VirtualClock], Coroutine[Any, Any, T]], start: float = 0.0) -> T:
    """Run ``main(clock)`` to completion on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(main(VirtualClock(loop)))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

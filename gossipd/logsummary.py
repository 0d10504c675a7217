"""Rate-limited log lines: one line per key at once, then a count per interval.

A hostile or broken sender can make a node refuse thousands of messages a
second; one WARNING each grew a log by 50 MB in 30 s. :class:`LogSummary`
logs the first event of a key (e.g. sender and reason) at once, counts the
ones that follow, and reports the count at most once per ``interval``:

    rejected POST /v1/gossip/model from 10.0.0.5: wrong_cluster (cluster 'x', this node is 'default')
    ... 60 s later, if more came:
    rejected 1234 more POST /v1/gossip/model from 10.0.0.5: wrong_cluster in the last 60 s (last: ...)

The clock is passed in (``time.monotonic`` by default) so tests drive it;
``flush`` reports pending counts (call it periodically and at shutdown). The
number of keys is bounded: past ``max_keys``, new keys share one overflow key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

OVERFLOW = ("*", "other senders")


@dataclass
class _Entry:
    since: float  # start of the current window
    label: str  # how the key reads in a line ("from 10.0.0.5: wrong_cluster")
    count: int = 0  # events in the window after the one logged
    last: str = ""  # detail of the latest of them


class LogSummary:
    """Per-key rate limiting of one kind of log line (see the module doc)."""

    def __init__(self, logger: logging.Logger, what: str, *, interval: float = 60.0, level: int = logging.WARNING,
                 max_keys: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what  # "rejected", "cannot reach", ...
        self.interval = interval
        self.level = level
        self.max_keys = max_keys
        self.clock = clock
        self._entries: dict[Hashable, _Entry] = {}

    def record(self, key: Hashable, label: str, detail: str = "") -> bool:
        """One event; True if it was logged now (else it was counted)."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None and len(self._entries) >= self.max_keys:
            key, label = OVERFLOW, "from other senders (too many to list)"
            entry = self._entries.get(key)
        if entry is not None and now - entry.since < self.interval:
            entry.count += 1
            entry.last = detail
            return False
        if entry is not None and entry.count:
            self._emit_count(entry, now)
        self._entries[key] = _Entry(since=now, label=label)
        self.logger.log(self.level, "%s %s%s", self.what, label, f" ({detail})" if detail else "")
        return True

    def flush(self) -> None:
        """Report the counts of windows that are over; forget keys that went quiet."""
        now = self.clock()
        for key, entry in list(self._entries.items()):
            if now - entry.since >= self.interval:
                if entry.count:
                    self._emit_count(entry, now)
                    self._entries[key] = _Entry(since=now, label=entry.label)
                else:
                    del self._entries[key]

    def close(self) -> None:
        """Report every pending count, whatever its window (at shutdown)."""
        now = self.clock()
        for entry in self._entries.values():
            if entry.count:
                self._emit_count(entry, now)
        self._entries.clear()

    def _emit_count(self, entry: _Entry, now: float) -> None:
        self.logger.log(self.level, "%s %d more %s in the last %.0f s%s", self.what, entry.count, entry.label,
                        now - entry.since, f" (last: {entry.last})" if entry.last else "")

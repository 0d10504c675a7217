"""LogSummary: one line per key at once, then a count at most once per interval."""

from __future__ import annotations

import logging

import pytest

from gossipd.logsummary import LogSummary


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def summary(caplog: pytest.LogCaptureFixture) -> tuple[LogSummary, Clock, pytest.LogCaptureFixture]:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="test.summary")
    return LogSummary(logging.getLogger("test.summary"), "rejected", interval=60.0, max_keys=3, clock=clock), clock, caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_first_event_logs_at_once_then_counts(summary) -> None:
    s, clock, caplog = summary
    assert s.record(("a", "bad"), "from a: bad", "detail 1")
    for i in range(999):
        clock.t += 0.01
        assert not s.record(("a", "bad"), "from a: bad", f"detail {i + 2}")
    assert lines(caplog) == ["rejected from a: bad (detail 1)"]
    s.flush()  # the window is not over: nothing yet
    assert len(caplog.records) == 1
    clock.t = 60.0
    s.flush()
    assert lines(caplog)[1] == "rejected 999 more from a: bad in the last 60 s (last: detail 1000)"
    clock.t = 200.0
    s.flush()  # a quiet window: nothing to say, and the key is forgotten
    assert len(caplog.records) == 2
    assert s.record(("a", "bad"), "from a: bad")  # so the next event is logged at once again


def test_keys_are_independent_and_an_event_after_the_window_reports_the_count(summary) -> None:
    s, clock, caplog = summary
    s.record(("a", "bad"), "from a: bad")
    s.record(("b", "bad"), "from b: bad")
    s.record(("a", "other"), "from a: other")
    s.record(("a", "bad"), "from a: bad")
    assert len(caplog.records) == 3
    clock.t = 61.0
    s.record(("a", "bad"), "from a: bad", "again")
    assert lines(caplog)[3:] == ["rejected 1 more from a: bad in the last 61 s", "rejected from a: bad (again)"]


def test_many_senders_share_one_overflow_line(summary) -> None:
    s, clock, caplog = summary
    for i in range(100):
        s.record((f"10.0.0.{i}", "bad"), f"from 10.0.0.{i}: bad")
    assert len(caplog.records) == 4  # max_keys=3 keys, then one overflow line
    assert "other senders" in lines(caplog)[-1]
    s.close()
    assert lines(caplog)[-1].startswith("rejected 96 more from other senders")

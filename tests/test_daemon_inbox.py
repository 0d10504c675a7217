"""Backpressure's parts, on their own: the queue of received models and the per-sender rate."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gossipd.core.messages import ModelMessage
from gossipd.daemon.inbox import Inbox, InboxFull, RateLimit


def model(sender: str, age: float = 1.0) -> ModelMessage:
    return ModelMessage(sender, "arch", age, np.zeros(3, np.float32))


async def test_the_queue_keeps_the_newest_model_per_sender_in_its_place() -> None:
    inbox = Inbox(capacity=3)
    inbox.put(model("a", 1))
    inbox.put(model("b", 1))
    waiting = inbox.put(model("a", 2), wait=True)
    inbox.put(model("c", 1))
    newer = inbox.put(model("a", 3))
    assert len(inbox) == 3 and inbox.stats.superseded == 2
    assert waiting.done is not None and waiting.done.result() == {"merged": False, "superseded": True}
    order = [(await inbox.get()).msg for _ in range(3)]
    assert [(m.sender, m.age) for m in order] == [("a", 3.0), ("b", 1.0), ("c", 1.0)]  # a kept its place
    assert order[0] is newer.msg


async def test_a_full_queue_refuses_other_senders_and_says_when_to_retry() -> None:
    inbox = Inbox(capacity=2)
    inbox.note_training(4.0)  # training got slow: the estimate follows
    inbox.put(model("a"))
    inbox.put(model("b"))
    with pytest.raises(InboxFull) as full:
        inbox.put(model("c"))
    assert full.value.retry_after >= 1.0 and full.value.retry_after == pytest.approx(3 * inbox.train_seconds)
    assert inbox.stats.full == 1 and len(inbox) == 2
    inbox.put(model("a", 5))  # a sender already waiting may still replace its model
    assert len(inbox) == 2 and inbox.stats.accepted == 3
    getter = asyncio.ensure_future(asyncio.gather(inbox.get(), inbox.get(), inbox.get()))
    await asyncio.sleep(0)
    assert not getter.done()  # the third get waits for a model
    inbox.put(model("d"))
    assert [q.msg.sender for q in await getter] == ["a", "b", "d"]


def test_rate_limit_allows_a_burst_then_the_rate_and_names_the_wait() -> None:
    limit = RateLimit(rate=0.5, burst=3)
    assert [limit.admit("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.admit("a", 0.0) == pytest.approx(2.0)  # one token every 2 s
    assert limit.admit("b", 0.0) == 0.0  # others are not held back by a
    assert limit.admit("a", 1.0) == pytest.approx(1.0)
    assert limit.admit("a", 2.0) == 0.0
    assert limit.admit("a", 100.0) == 0.0 and limit.admit("a", 100.0) == 0.0  # refilled, up to the burst
    assert limit.admit("a", 100.0) == 0.0 and limit.admit("a", 100.0) > 0
    assert limit.limited == 3


def test_rate_limit_memory_is_bounded() -> None:
    limit = RateLimit(rate=1.0, burst=1, max_senders=10)
    for i in range(1000):
        limit.admit(f"s{i}", 0.0)
    assert len(limit._buckets) == 10
    assert limit.admit("s999", 0.0) > 0  # the most recent ones are remembered

"""Daemons over the in-memory transport, on a virtual clock: several in one process, minutes in seconds.

The very driver the real daemons run (``gossipd.daemon.driver.Daemon``), with
``MemoryTransport`` instead of HTTP and ``VirtualClock`` instead of the wall
clock (``gossipd.daemon.clock``): partitions that heal, busy peers kept,
backpressure answers, numeric safety, supervision and checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gossipd import wire
from gossipd.core.messages import ModelMessage, ShuffleRequest
from gossipd.core.scaling import FeatureStats
from gossipd.core.state import ModelState
from gossipd.daemon.clock import VirtualClock, run_virtual
from gossipd.daemon.driver import Daemon
from gossipd.daemon.memory_transport import MemoryNetwork
from gossipd.daemon.store import Checkpoint, Store
from gossipd.daemon.config import load_config
from gossipd.daemon.supervisor import EXIT_TASK_DIED, Supervisor
from gossipd.daemon.transport import MODEL_PATH, SHUFFLE_PATH
from gossipd.testing import partition_then_heal, start_memory_daemons
from peer_sampling.messages import PeerDescriptor

pytestmark = pytest.mark.timeout(120)


async def stop_all(daemons: list[Daemon]) -> None:
    for d in daemons:
        await d.stop()


# -- partitions (issue 10 acceptance) -------------------------------------------------------


def test_a_partition_heals_within_30_s_with_the_defaults(tmp_path: Path) -> None:
    """Cut 3 | 3 for 4 minutes (past every timeout: request 5 s, pending shuffle 10 s, the
    strikes, reseeding 50 s): the sides forget each other entirely; with the defaults they are
    one overlay again within 30 s (of the virtual clock) after the cut ends. Issue 10 measured
    real daemons in namespaces still split 180 s after a 60 s cut, before reseeding was on."""
    got = partition_then_heal(tmp_path / "defaults", cut=240.0)
    print(f"\npartition 3 | 3 for 240 s, defaults: {got}")
    assert got["mixed"] == [6]
    assert got["during"] == [3, 3] and got["across"] == 0  # really cut off: no view entry across
    assert got["healed_after"] is not None and got["healed_after"] <= 30.0


def test_without_reseeding_a_partition_never_heals(tmp_path: Path) -> None:
    """What the defaults above are for: the same cut with reseeding off stays split."""
    got = partition_then_heal(tmp_path / "off", cut=240.0, overrides={"peer_sampling.reseed_interval": float("inf")})
    assert got["during"] == [3, 3] and got["across"] == 0
    assert got["healed_after"] is None  # still two pieces 120 s after the cut ended


# -- busy peers -----------------------------------------------------------------------------


def test_a_peer_that_answers_busy_keeps_its_place(tmp_path: Path) -> None:
    """A receiver that rate-limits hard answers most of its partner's messages 429: the
    partner counts them as busy, never as failures, and keeps the receiver in its view."""

    async def main(clock: VirtualClock) -> tuple[dict[str, Any], list[str], dict[str, int]]:
        net = MemoryNetwork()
        daemons = await start_memory_daemons(tmp_path, 2, net, clock, overrides={"sender_rate": 0.5})
        try:
            await asyncio.sleep(120)
            a, b = daemons
            return a.status()["counters"], a.sampler.peers(), b.inbox_report()
        finally:
            await stop_all(daemons)

    counters, peers, inbox = run_virtual(main)
    assert inbox["throttled"] >= 10 and counters["busy"] >= 10  # the receiver did refuse, often
    assert counters["send_failures"] == 0 and counters["timeouts"] == 0
    assert peers == ["http://n2.test:7070"]


# -- one daemon, messages handed straight to its handler ------------------------------------


def one_daemon(base: Path, body: Any, **overrides: Any) -> Any:
    """Start one in-memory daemon (peers with hour-long periods: only the test talks to it),
    run ``body(daemon, clock)``, stop it."""

    async def main(clock: VirtualClock) -> Any:
        net = MemoryNetwork()
        (daemon,) = await start_memory_daemons(base, 1, net, clock, overrides={
            "gossip.interval": 3600.0, "peer_sampling.interval": 3600.0, **overrides})
        try:
            return await body(daemon, clock)
        finally:
            await daemon.stop()

    return run_virtual(main)


def model_message(daemon: Daemon, sender: str, params: np.ndarray, age: float = 100.0) -> bytes:
    k = daemon.learner.stat_columns
    stats = FeatureStats(1.0, np.zeros(k), np.ones(k)) if k else None
    return wire.encode(ModelMessage(sender, daemon.learner.fingerprint, age, params, stats), cluster="default")


def test_models_are_queued_and_answered_at_once_and_a_full_queue_says_when_to_retry(tmp_path: Path) -> None:
    async def body(daemon: Daemon, clock: VirtualClock) -> None:
        n = daemon.learner.n_params
        small = np.full(n, 0.01, np.float32)
        def push(sender: str, age: float = 100.0) -> Any:
            return daemon.peer_message(MODEL_PATH, model_message(daemon, sender, small, age), "test",
                                       respond_async=True)

        # Nothing yields to the trainer meanwhile: the queue (max_pending 4) fills up.
        answers = [await push(f"http://p{i}.test:1") for i in range(3)]
        answers.append(await push("http://p0.test:1", age=200.0))  # a newer model takes its sender's place
        answers += [await push(f"http://p{i}.test:1") for i in range(3, 6)]
        assert [a.status for a in answers] == [202, 202, 202, 202, 202, 503, 503]
        busy = answers[-1]
        assert busy.retry_after is not None and busy.retry_after >= 1 and int(busy.http_headers()["Retry-After"]) >= 1
        assert b'"error": "busy"' in busy.body
        await asyncio.sleep(1.0)
        report = daemon.inbox_report()
        assert report == {**report, "queued": 0, "accepted": 5, "superseded": 1, "full": 2}
        assert daemon.status()["counters"]["merged"] == 4
        # A sender that does not ask for 202 (gossipd before backpressure) waits for the merge.
        old = await daemon.peer_message(MODEL_PATH, model_message(daemon, "http://old.test:1", small),
                                        "test", respond_async=False)
        assert old.status == 200 and b'"merged": true' in old.body

    one_daemon(tmp_path, body, max_pending=4)


def test_one_sender_is_rate_limited_over_models_and_shuffles_together(tmp_path: Path) -> None:
    async def body(daemon: Daemon, clock: VirtualClock) -> None:
        sender = "http://chatty.test:1"
        shuffle = wire.encode(ShuffleRequest(sender, (PeerDescriptor(sender, 0),)), cluster="default")
        model = model_message(daemon, sender, np.zeros(daemon.learner.n_params, np.float32))
        statuses = []
        for i in range(10):
            answer = await daemon.peer_message(SHUFFLE_PATH if i % 2 else MODEL_PATH, shuffle if i % 2 else model,
                                               "test", respond_async=True)
            statuses.append(answer.status)
        assert statuses == [202, 200] * 4 + [429, 429]  # sender_rate 4 per interval, bursts of 8
        assert answer.retry_after == pytest.approx(1 / (4 / daemon.config.gossip.interval))
        await asyncio.sleep(answer.retry_after)
        assert (await daemon.peer_message(SHUFFLE_PATH, shuffle, "test", respond_async=True)).status == 200
        other = "http://quiet.test:1"
        quiet = wire.encode(ShuffleRequest(other, (PeerDescriptor(other, 0),)), cluster="default")
        assert (await daemon.peer_message(SHUFFLE_PATH, quiet, "test", respond_async=True)).status == 200
        assert daemon.inbox_report()["throttled"] == 2

    one_daemon(tmp_path, body)


def test_discarded_models_are_counted_logged_once_and_never_answered_as_merged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gossipd")

    async def body(daemon: Daemon, clock: VirtualClock) -> None:
        n = daemon.learner.n_params
        huge = np.full(n, np.finfo(np.float32).max, np.float32)  # valid on the wire: finite
        before = daemon.model.state
        answers = [await daemon.peer_message(MODEL_PATH, model_message(daemon, f"http://liar{i}.test:1", huge),
                                             "test", respond_async=False) for i in range(3)]
        for a in answers:
            assert a.status == 200 and b'"merged": false' in a.body and b'"discarded": "too_large"' in a.body
        assert daemon.status()["counters"]["discarded"] == 3
        assert b"gossipd_discarded_total 3.0" in daemon.metrics_text()
        assert daemon.model.state is before

    one_daemon(tmp_path, body)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("discarded")]
    # Once per kind at once, then only a count (here flushed at shutdown).
    assert len(lines) == 2 and "too_large" in lines[0] and "liar0" in lines[0]
    assert lines[1].startswith("discarded 2 more merge results (too_large)")


# -- supervision ------------------------------------------------------------------------------


class CountingNotifier:
    """sd_notify as the supervisor sees it: a watchdog every second, pings counted."""

    def __init__(self) -> None:
        self.pings = 0

    def watchdog_interval(self) -> float:
        return 1.0

    def watchdog(self) -> bool:
        self.pings += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return True

    def status(self, text: str) -> bool:
        return True

    def stopping(self, status: str | None = None) -> bool:
        return True


def test_a_dead_loop_stops_the_watchdog_and_the_daemon_exits_70(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="gossipd")

    async def main(clock: VirtualClock) -> tuple[int, int, int, str | None, int]:
        config = load_config(overrides={"state_dir": str(tmp_path)})
        daemon = Daemon(config, transport=MemoryNetwork().transport("http://n1.test:7070"), clock=clock)
        notifier = CountingNotifier()
        daemon.notifier = notifier  # type: ignore[assignment]
        # Keep running after the death, to see what the watchdog does (the daemon would stop).
        daemon.supervisor = Supervisor(on_death=lambda name: None, stopping=daemon._stopping.is_set)
        await daemon.start()
        await asyncio.sleep(10)
        alive_pings = notifier.pings
        daemon._evaluate = lambda: 1 / 0  # type: ignore[method-assign]
        daemon._evaluated = None  # so the loop evaluates at its next round, and dies
        await asyncio.sleep(10)
        dead_pings = notifier.pings
        await asyncio.sleep(10)
        failure = daemon.supervisor.failure
        await daemon.stop()
        return alive_pings, dead_pings, notifier.pings, failure, daemon.exit_code

    alive, dead, later, failure, code = run_virtual(main)
    assert alive >= 9  # one a second while everything ran
    assert later == dead  # none once a loop had died
    assert failure is not None and failure.startswith("evaluation: ZeroDivisionError")
    assert code == EXIT_TASK_DIED
    assert any("background task evaluation died" in r.getMessage() for r in caplog.records)


def test_a_loop_that_raises_stops_the_daemon(tmp_path: Path) -> None:
    async def main(clock: VirtualClock) -> tuple[int, str | None]:
        net = MemoryNetwork()
        (daemon,) = await start_memory_daemons(tmp_path, 1, net, clock)

        def broken() -> None:
            raise RuntimeError("injected fault")

        daemon._log_view_changes = broken  # type: ignore[method-assign]
        async with asyncio.timeout(60):
            await daemon.wait_stopped()  # the supervisor asks to stop; nobody else does
        await daemon.stop()
        return daemon.exit_code, daemon.supervisor.failure

    code, failure = run_virtual(main)
    assert code == EXIT_TASK_DIED and failure == "logs: RuntimeError: injected fault"


# -- checkpoints --------------------------------------------------------------------------------


def test_the_checkpoint_is_the_snapshot_taken_on_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The view changes on the loop while a checkpoint is written off it: the file holds the view
    as it was when the checkpoint began, never a mix."""
    saved = Store.save

    async def body(d: Daemon, clock: VirtualClock) -> None:
        def save_while_the_view_changes(store: Store, cp: Checkpoint) -> None:
            d.sampler.view.add(PeerDescriptor("http://late.test:1", 0))  # as the loop would, meanwhile
            saved(store, cp)

        d.sampler.view.add(PeerDescriptor("http://early.test:1", 0))
        monkeypatch.setattr(Store, "save", save_while_the_view_changes)
        await d.checkpoint()
        monkeypatch.setattr(Store, "save", saved)
        view = [a for a, _ in d.store.load_any().view["view"]]
        assert "http://early.test:1" in view and "http://late.test:1" not in view
        assert "http://late.test:1" in d.sampler.peers()  # it did change meanwhile

    one_daemon(tmp_path, body)


def test_a_checkpoint_with_a_non_finite_model_keeps_its_view_and_starts_afresh(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A gossipd before numeric safety could checkpoint a NaN model. Its file is sound (the
    checksum matches): the node rejoins through the saved view and starts a fresh model,
    and the file is not set aside."""
    caplog.set_level(logging.WARNING, logger="gossipd")

    async def first(d: Daemon, clock: VirtualClock) -> None:
        d.sampler.view.add(PeerDescriptor("http://friend.test:1", 0))

    one_daemon(tmp_path, first)  # its final checkpoint holds the friend
    store = Store(tmp_path / "n1")
    cp = store.load_any()
    store.save(Checkpoint(**{**vars(cp), "state": ModelState(np.full(cp.state.size, np.nan, np.float32), 5000.0)}))

    async def second(d: Daemon, clock: VirtualClock) -> None:
        assert d.model.state.age == 0.0 and np.isfinite(d.model.state.params).all()
        assert "http://friend.test:1" in d.sampler.peers()

    one_daemon(tmp_path, second)
    assert not list((tmp_path / "n1").glob("checkpoint.msgpack.rejected-*"))
    assert any("checkpoint's model is not usable" in r.getMessage() for r in caplog.records)

"""Prometheus metrics of a daemon, read at scrape time from a snapshot function.

The collector holds no counters of its own (no double bookkeeping): every
scrape asks the driver for a :class:`MetricsSnapshot` of what it already keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

COUNTER_HELP = {
    "sent": "models pushed to peers",
    "received": "models received and accepted",
    "merged": "models merged and trained on",
    "rejected": "messages rejected as malformed or foreign",
    "send_failures": "messages that did not reach their peer",
    "discarded": "merge or training results thrown away as non-finite or too large (previous model kept)",
    "timeouts": "requests that got no answer in time (or lost their reply)",
    "busy": "requests a busy peer answered with 429/503",
}


@dataclass(frozen=True)
class MetricsSnapshot:
    counters: dict[str, int]
    model_age: float
    model_params: int
    peers: int
    pending_updates: int
    uptime_seconds: float
    accuracy: float | None = None
    # Regression's metrics (in the target's units), where classification has accuracy.
    rmse: float | None = None
    r2: float | None = None
    train_examples: int | None = None
    test_examples: int | None = None
    arrived_examples: int | None = None
    rejections: dict[str, int] = field(default_factory=dict)  # refused messages by error code
    dropped_addresses: int = 0
    connections: dict[str, int] = field(default_factory=dict)  # ConnectionGuard.stats()
    inbox: dict[str, int] = field(default_factory=dict)  # Daemon.inbox_report()


# Optional gauges: name, help, snapshot field. Absent when the value is None (a
# classifier has no RMSE, a regressor no accuracy; nothing before the first evaluation).
OPTIONAL_GAUGES = (
    ("gossipd_accuracy", "accuracy on this node's held-out examples", "accuracy"),
    ("gossipd_rmse", "root mean squared error on this node's held-out examples (regression, target units)",
     "rmse"),
    ("gossipd_r2", "coefficient of determination R² on this node's held-out examples (regression)", "r2"),
    ("gossipd_train_examples", "examples this node trains on", "train_examples"),
    ("gossipd_test_examples", "examples this node holds out to score the model", "test_examples"),
    ("gossipd_arrived_examples", "examples added after start-up (a followed file or directory, POST /v1/data)",
     "arrived_examples"),
)

# Backpressure on received models (Daemon.inbox_report()).
INBOX_COUNTERS = (
    ("accepted", "models queued for training and answered 202"),
    ("superseded", "queued models replaced by a newer one from the same sender"),
    ("full", "models answered 503 busy: the queue was full"),
    ("throttled", "peer messages answered 429: their sender exceeded sender_rate"),
    ("failed", "queued models whose training raised (logged)"),
)


class _Collector:
    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot()
        for name, value in snap.counters.items():
            c = CounterMetricFamily(f"gossipd_{name}", COUNTER_HELP.get(name, name.replace("_", " ")))
            c.add_metric([], value)
            yield c
        for name, help_text, value in (
            ("gossipd_model_age", "examples the local model has seen (merges take the max)", snap.model_age),
            ("gossipd_model_params", "parameters in the model", snap.model_params),
            ("gossipd_peers", "entries in the peer-sampling view", snap.peers),
            ("gossipd_pending_updates", "received models waiting for the trainer", snap.pending_updates),
            ("gossipd_uptime_seconds", "seconds since start", snap.uptime_seconds),
        ):
            g = GaugeMetricFamily(name, help_text)
            g.add_metric([], value)
            yield g
        rejected = CounterMetricFamily("gossipd_rejections", "peer messages refused, by error code (docs/protocol.md)",
                                       labels=["code"])
        for code, value in sorted(snap.rejections.items()):
            rejected.add_metric([code], value)
        yield rejected
        dropped = CounterMetricFamily("gossipd_dropped_addresses",
                                      "shuffle entries dropped because peer_allow or the address rules refuse them")
        dropped.add_metric([], snap.dropped_addresses)
        yield dropped
        if snap.connections:
            for name, help_text in (("refused", "connections refused with 503: every connection was busy"),
                                    ("evicted", "idle or slow connections closed at the cap for a newer one"),
                                    ("timed_out", "connections closed for not sending a request head in time")):
                c = CounterMetricFamily(f"gossipd_connections_{name}", help_text)
                c.add_metric([], snap.connections.get(name, 0))
                yield c
            for name, help_text in (("open", "client connections open now"),
                                    ("max", "the cap on open client connections")):
                g = GaugeMetricFamily(f"gossipd_connections_{name}", help_text)
                g.add_metric([], snap.connections.get(name, 0))
                yield g
        for name, help_text in INBOX_COUNTERS:
            if name in snap.inbox:
                c = CounterMetricFamily(f"gossipd_inbox_{name}", help_text)
                c.add_metric([], snap.inbox[name])
                yield c
        for name, help_text, key in OPTIONAL_GAUGES:
            value = getattr(snap, key)
            if value is not None:
                g = GaugeMetricFamily(name, help_text)
                g.add_metric([], value)
                yield g


class Metrics:
    """A private registry (not the process-global one) around one snapshot function."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(snapshot))

    def text(self) -> bytes:
        return generate_latest(self.registry)

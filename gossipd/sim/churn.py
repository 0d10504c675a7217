"""Availability from a churn trace: when each simulated node is online. Pure functions.

``--churn FILE.csv`` replays a trace; ``--churn diurnal[:KEY=VALUE,...]``
generates phone-like sessions. Both become a :class:`Trace`: per node, the
sorted, disjoint intervals ``[online_from, online_to)`` (in cycles) during
which it is online. Offline, a node neither sends nor receives: messages to it
are refused (the sender sees UNREACHABLE), replies to it are lost, its timers
wait. FedAvg takes a client into a round only if it is online for all of it.

**Trace file.** CSV with a header naming the columns ``node``,
``online_from``, ``online_to`` (in any order; other columns are ignored), one
online session a row, times in cycles (one cycle = one gossip period Δ: divide
seconds by Δ). ``node`` is the simulated node's number, 0 to ``--nodes`` - 1;
rows of higher numbers are ignored, and a node without rows is offline
throughout. Sessions of one node may come in any order and may overlap (they
are joined).

**Diurnal model** (``diurnal:day=100,online=0.4,swing=0.8,session=10,spread=0.1``,
every key optional, those are the defaults). Phones that take part when
charging on a network, as in the smartphone traces the gossip-learning
papers replay: the share of nodes online follows the day,

    p_i(t) = online * (1 + swing * sin(2 pi (t / day - phase_i)))   (kept in [0.01, 0.99])

with ``phase_i`` uniform in ``[-spread / 2, spread / 2]`` (time zones and
habits), and each node alternates online sessions and offline gaps: a
session lasts an exponential time of mean ``session`` cycles; a gap starting
at ``t`` an exponential time of mean ``session * (1 - p_i(t)) / p_i(t)``, so
that at any time about ``p_i(t)`` of the nodes are online (exactly so for a
constant p; when p moves, the share follows it with a lag of about one
session, so long sessions flatten the day). At ``t = 0`` node ``i`` is online with probability ``p_i(0)``.
Drawn from the simulation's seed: the same seed gives the same trace.
"""

from __future__ import annotations

import bisect
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DIURNAL_DEFAULTS", "ChurnError", "Diurnal", "Trace", "TraceArrays", "diurnal_trace", "load_trace",
           "make_trace", "parse_churn"]

DIURNAL_DEFAULTS = {"day": 100.0, "online": 0.4, "swing": 0.8, "session": 10.0, "spread": 0.1}
P_MIN, P_MAX = 0.01, 0.99
TRACE_COLUMNS = ("node", "online_from", "online_to")


class ChurnError(ValueError):
    """A ``--churn`` value or trace file that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class Trace:
    """Per node, sorted disjoint online intervals: ``starts[i][j] <= t < ends[i][j]``."""

    starts: tuple[tuple[float, ...], ...]
    ends: tuple[tuple[float, ...], ...]

    @classmethod
    def from_sessions(cls, nodes: int, sessions: list[list[tuple[float, float]]]) -> Trace:
        """Join each node's sessions (any order, overlaps allowed) into disjoint intervals."""
        starts, ends = [], []
        for i in range(nodes):
            s: list[float] = []
            e: list[float] = []
            for a, b in sorted(sessions[i]):
                if s and a <= e[-1]:
                    e[-1] = max(e[-1], b)
                else:
                    s.append(a)
                    e.append(b)
            starts.append(tuple(s))
            ends.append(tuple(e))
        return cls(tuple(starts), tuple(ends))

    @property
    def nodes(self) -> int:
        return len(self.starts)

    def online(self, node: int, t: float) -> bool:
        """Is ``node`` online at time ``t``?"""
        j = bisect.bisect_right(self.starts[node], t) - 1
        return j >= 0 and t < self.ends[node][j]

    def online_during(self, node: int, t0: float, t1: float) -> bool:
        """Is ``node`` online throughout ``[t0, t1)``?"""
        j = bisect.bisect_right(self.starts[node], t0) - 1
        return j >= 0 and t1 <= self.ends[node][j]

    def transitions(self, until: float) -> list[tuple[float, int, bool]]:
        """Every change before ``until`` as ``(time, node, online)``, in time order (``t > 0``;
        the state at 0 is :meth:`online` at 0)."""
        out = []
        for i in range(self.nodes):
            for a, b in zip(self.starts[i], self.ends[i]):
                if 0.0 < a < until:
                    out.append((a, i, True))
                if 0.0 < b < until:
                    out.append((b, i, False))
        out.sort()
        return out

    def fraction_online(self, t: float) -> float:
        return sum(self.online(i, t) for i in range(self.nodes)) / max(self.nodes, 1)

    def arrays(self) -> TraceArrays:
        """This trace as flat arrays, for questions about many nodes at once."""
        return TraceArrays(self)


class TraceArrays:
    """A :class:`Trace` as flat arrays: :meth:`online` and :meth:`next_start` for many nodes at
    once (the batched simulator). Every interval is keyed ``node * width + (start - low)``, a
    node's keys in a range of their own, so one sorted array answers every node's bisect."""

    def __init__(self, trace: Trace) -> None:
        counts = np.array([len(s) for s in trace.starts], dtype=np.int64)
        self.node = np.repeat(np.arange(trace.nodes), counts)
        self.starts = np.array([a for s in trace.starts for a in s], dtype=np.float64)
        self.ends = np.array([b for e in trace.ends for b in e], dtype=np.float64)
        self.low = min(0.0, float(self.starts.min(initial=0.0)))
        self.width = float(self.ends.max(initial=0.0)) - self.low + 1.0
        self.keys = self.node * self.width + (self.starts - self.low)

    def _after(self, nodes: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Per query, the index of the first interval keyed after (node, t): the node's next one
        if it has one, else another node's or the end. Times past the last end count as there."""
        at = np.clip(t - self.low, 0.0, self.width - 0.5)
        return np.searchsorted(self.keys, nodes * self.width + at, side="right")

    def _mine(self, j: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        return (j >= 0) & (j < len(self.node)) & (self.node[np.clip(j, 0, max(len(self.node) - 1, 0))] == nodes)

    def online(self, nodes: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        """:meth:`Trace.online` of each node at its time (or all of them at one time)."""
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), nodes.shape)
        if not len(self.keys):
            return np.zeros(nodes.shape, dtype=bool)
        j = self._after(nodes, t) - 1  # the last interval starting at or before t
        return self._mine(j, nodes) & (t < self.ends[np.maximum(j, 0)])

    def next_start(self, nodes: np.ndarray, t: np.ndarray) -> np.ndarray:
        """When each node next comes online after ``t`` (inf: never again)."""
        if not len(self.keys):
            return np.full(nodes.shape, np.inf)
        j = self._after(nodes, np.asarray(t, dtype=np.float64))
        return np.where(self._mine(j, nodes), self.starts[np.minimum(j, len(self.starts) - 1)], np.inf)


# -- the trace file ---------------------------------------------------------------------------


def load_trace(path: Path | str, nodes: int) -> Trace:
    """A trace CSV (see the module doc) for ``nodes`` nodes; ChurnError naming the file and line."""
    path = Path(path)
    sessions: list[list[tuple[float, float]]] = [[] for _ in range(nodes)]
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise ChurnError(f"{path}: empty file; expected a header {','.join(TRACE_COLUMNS)}")
            names = [h.strip() for h in header]
            missing = [c for c in TRACE_COLUMNS if c not in names]
            if missing:
                raise ChurnError(f"{path}: line 1: the header lacks {', '.join(missing)} "
                                 f"(expected {','.join(TRACE_COLUMNS)})")
            col = [names.index(c) for c in TRACE_COLUMNS]
            for line, row in enumerate(reader, start=2):
                if not row or all(not v.strip() for v in row):
                    continue
                node, start, end = _row(path, line, row, col)
                if node < nodes:
                    sessions[node].append((start, end))
    except OSError as exc:
        raise ChurnError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ChurnError(f"{path}: not a text (UTF-8) CSV file") from None
    return Trace.from_sessions(nodes, sessions)


def _row(path: Path, line: int, row: list[str], col: list[int]) -> tuple[int, float, float]:
    try:
        node_s, start_s, end_s = (row[c].strip() for c in col)
    except IndexError:
        raise ChurnError(f"{path}: line {line}: expected {len(col)} columns or more, got {len(row)}") from None
    try:
        node = int(node_s)
    except ValueError:
        raise ChurnError(f"{path}: line {line}: node must be an integer >= 0, got {node_s!r}") from None
    try:
        start, end = float(start_s), float(end_s)
    except ValueError:
        raise ChurnError(f"{path}: line {line}: online_from and online_to must be numbers (cycles), "
                         f"got {start_s!r}, {end_s!r}") from None
    if node < 0 or not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise ChurnError(f"{path}: line {line}: need node >= 0 and 0 <= online_from < online_to, "
                         f"got {node}, {start:g}, {end:g}")
    return node, start, end


# -- the diurnal generator --------------------------------------------------------------------


@dataclass(frozen=True)
class Diurnal:
    """Parameters of the diurnal model (see the module doc)."""

    day: float = DIURNAL_DEFAULTS["day"]
    online: float = DIURNAL_DEFAULTS["online"]
    swing: float = DIURNAL_DEFAULTS["swing"]
    session: float = DIURNAL_DEFAULTS["session"]
    spread: float = DIURNAL_DEFAULTS["spread"]

    def __post_init__(self) -> None:
        checks = {"day": self.day > 0, "online": 0 < self.online < 1, "swing": 0 <= self.swing <= 1,
                  "session": self.session > 0, "spread": 0 <= self.spread <= 1}
        for key, ok in checks.items():
            value = getattr(self, key)
            if not (ok and math.isfinite(value)):
                rule = {"day": "> 0", "online": "in (0, 1)", "swing": "in [0, 1]", "session": "> 0",
                        "spread": "in [0, 1]"}[key]
                raise ChurnError(f"diurnal {key} must be {rule}, got {value:g}")

    def probability(self, t: float, phase: float) -> float:
        p = self.online * (1.0 + self.swing * math.sin(2.0 * math.pi * (t / self.day - phase)))
        return min(max(p, P_MIN), P_MAX)


def diurnal_trace(model: Diurnal, nodes: int, until: float, rng: np.random.Generator) -> Trace:
    """Sessions of ``nodes`` phones up to time ``until`` under ``model``."""
    sessions: list[list[tuple[float, float]]] = []
    for _ in range(nodes):
        phase = rng.uniform(-model.spread / 2, model.spread / 2) if model.spread else 0.0
        own: list[tuple[float, float]] = []
        t = 0.0
        up = rng.random() < model.probability(0.0, phase)
        while t < until:
            if up:
                end = t + rng.exponential(model.session)
                own.append((t, min(end, until)))
            else:
                p = model.probability(t, phase)
                end = t + rng.exponential(model.session * (1.0 - p) / p)
            t, up = end, not up
        sessions.append(own)
    return Trace.from_sessions(nodes, sessions)


# -- --churn ------------------------------------------------------------------------------


def parse_churn(spec: str) -> Path | Diurnal:
    """``diurnal[:KEY=VALUE,...]`` -> Diurnal; anything else is a trace file's path (it must exist)."""
    name, sep, args = spec.strip().partition(":")
    if name == "diurnal":
        values: dict[str, float] = {}
        for item in filter(None, (a.strip() for a in args.split(","))) if sep else ():
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in DIURNAL_DEFAULTS:
                raise ChurnError(f"diurnal takes KEY=VALUE with KEY one of {', '.join(DIURNAL_DEFAULTS)}; "
                                 f"got {item!r}")
            try:
                values[key] = float(value)
            except ValueError:
                raise ChurnError(f"diurnal {key} must be a number, got {value.strip()!r}") from None
        return Diurnal(**values)
    path = Path(spec)
    if not path.is_file():
        raise ChurnError(f"{spec}: no such trace file (or use diurnal[:day=...,online=...,swing=...,"
                         f"session=...,spread=...])")
    return path


def make_trace(spec: str, nodes: int, until: float, seed: int) -> Trace:
    """The availability ``--churn spec`` gives ``nodes`` nodes over ``[0, until)`` for run ``seed``."""
    source = parse_churn(spec)
    if isinstance(source, Diurnal):
        return diurnal_trace(source, nodes, until, np.random.default_rng(np.random.SeedSequence([seed, 0xD1A])))
    return load_trace(source, nodes)

"""Feature scaling as part of the model: statistics and how the network agrees on them.

Averaging two models is only meaningful if both saw their inputs scaled the
same way. A model therefore comes with the statistics its inputs are
standardised by, ``(x - mean) / std`` per feature (and, for regression, per
target: the model predicts the standardised target). Three modes
(:class:`Scaling`):

- ``none``: raw features; the user's data is already on a sensible scale.
- ``fixed``: statistics given in the configuration, the same on every node.
- ``network``: learned by the network. Each node starts from the exact
  statistics of its own data; every model message carries the sender's
  :class:`FeatureStats`, and the receiver merges them with :meth:`FeatureStats.merge`
  alongside the model: the count-weighted mean of the means and of the
  second moments (so the spread between the two sides counts as variance),
  keeping the larger count. Like the age-weighted model merge, pairwise
  averaging converges to one consensus on every node; it is a weighted mean of
  what the nodes hold, close to but not exactly the pooled statistics. A node
  merges received statistics through :class:`RobustStatsMerge`, which drops
  claims far from what other senders and its own data hold and caps the
  claimed count at its own, so members lying about their statistics cannot
  take the network's scaling over.
  Examples that arrive later join a node's estimate with :meth:`FeatureStats.pooled`.

Pure numpy; no torch.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

#: Standard deviations below this (constant columns, e.g. blank pixels) scale by 1.
MIN_STD = 1e-6
#: Largest statistics vector a model message may carry (wire: MAX_STR_LEN / 4 bytes).
MAX_STAT_COLUMNS = 256
SCALING_MODES = ("network", "fixed", "none")


def merge_moments(count_a: Any, mean_a: np.ndarray, var_a: np.ndarray, count_b: Any, mean_b: np.ndarray,
                  var_b: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    """The gossip merge of two estimates ``(count, mean, var)``: count-weighted averages of
    the means and of the second moments (the spread between the two counts as variance),
    count = the larger one. One estimate (a float count, 1-D columns) or one per node (counts
    ``(m,)``, columns ``(m, k)``): :meth:`FeatureStats.merge` and the batched simulator both
    merge by this function."""
    if np.ndim(count_a) == 0:
        total = count_a + count_b
        a: Any = 0.5 if total <= 0 else count_a / total
        count: Any = max(count_a, count_b)
    else:
        total = count_a + count_b
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(total <= 0, 0.5, count_a / np.where(total <= 0, 1.0, total))[:, None]
        count = np.maximum(count_a, count_b)
    b = 1.0 - a
    delta = mean_a - mean_b
    # Stepped from a's values, not a * mean_a + b * mean_b: merging equal estimates is then
    # exact (0.5 * 5e-324 + 0.5 * 5e-324 rounds to 0 in subnormals).
    mean = mean_a - b * delta
    var = var_a + b * (var_b - var_a) + (a * b) * delta * delta
    return count, mean, var


def capped_count(claimed: Any, own: Any) -> Any:
    """The weight a received estimate's count gets: at most our own (one message moves a node
    at most half-way; no count race), but at least 1 for a node that holds no data (count 0):
    its own statistics are a placeholder (mean 0, var 1), so the first estimate of a node that
    has data, or has learnt from one, replaces them, and one of another node with none (count
    0) still leaves them. Without the floor such a node's statistics are forever a half-way
    blend of placeholders, as 87% of the nodes of a 10^4-node digits network are.
    One value or one per node."""
    if np.ndim(claimed) == 0 and np.ndim(own) == 0:
        return min(claimed, max(own, 1.0))
    return np.minimum(claimed, np.maximum(own, 1.0))


def scale_of(var: np.ndarray) -> np.ndarray:
    """Standard deviations from variances, with those below MIN_STD (constant columns) as 1."""
    std = np.sqrt(var)
    return np.where(std < MIN_STD, 1.0, std)


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Count, mean and (population) variance per column. Immutable."""

    count: float
    mean: np.ndarray
    var: np.ndarray

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float64).reshape(-1)
        var = np.array(self.var, dtype=np.float64).reshape(-1)
        if mean.shape != var.shape:
            raise ValueError(f"stats mean has {mean.size} columns, var has {var.size}")
        count = float(self.count)
        if not math.isfinite(count) or count < 0:
            raise ValueError(f"stats count must be finite and >= 0, got {self.count!r}")
        if not (np.isfinite(mean).all() and np.isfinite(var).all()) or (var < 0).any():
            raise ValueError("stats mean and var must be finite, var >= 0")
        mean.flags.writeable = False
        var.flags.writeable = False
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "var", var)

    @classmethod
    def _owned(cls, count: float, mean: np.ndarray, var: np.ndarray) -> FeatureStats:
        """Wrap arrays just computed from valid statistics, skipping the checks (hot path)."""
        mean.flags.writeable = False
        var.flags.writeable = False
        stats = object.__new__(cls)
        object.__setattr__(stats, "count", float(count))
        object.__setattr__(stats, "mean", mean)
        object.__setattr__(stats, "var", var)
        return stats

    @classmethod
    def of(cls, columns: np.ndarray) -> FeatureStats:
        """Exact statistics of the rows of ``columns`` ``(n, k)``; no rows: count 0, mean 0, var 1."""
        columns = np.asarray(columns, dtype=np.float64)
        if columns.ndim != 2:
            raise ValueError(f"stats need a 2-D array, got shape {columns.shape}")
        if len(columns) == 0:
            return cls(0.0, np.zeros(columns.shape[1]), np.ones(columns.shape[1]))
        return cls(float(len(columns)), columns.mean(axis=0), columns.var(axis=0))

    @classmethod
    def fixed(cls, mean: Any, std: Any) -> FeatureStats:
        """Configured statistics (count 1: they never meet another estimate)."""
        std = np.asarray(std, dtype=np.float64)
        if (std <= 0).any() or not np.isfinite(std).all():
            raise ValueError("fixed scaling std must be finite and > 0")
        return cls(1.0, mean, std ** 2)

    @property
    def size(self) -> int:
        return int(self.mean.shape[0])

    @cached_property
    def std(self) -> np.ndarray:
        return scale_of(self.var)

    @cached_property
    def shift32(self) -> np.ndarray:
        """float32 mean, for the learners' tensors."""
        return self.mean.astype(np.float32)

    @cached_property
    def inv_scale32(self) -> np.ndarray:
        """float32 1/std."""
        return (1.0 / self.std).astype(np.float32)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Gossip merge: count-weighted average, count = the larger one.

        The two estimates may summarise the same examples (they reached both
        nodes along different paths), so counts are not added.
        """
        if other.size != self.size:
            raise ValueError(f"stats of {other.size} columns cannot merge into {self.size}")
        count, mean, var = merge_moments(self.count, self.mean, self.var, other.count, other.mean, other.var)
        return FeatureStats._owned(count, mean, var)

    def pooled(self, other: FeatureStats) -> FeatureStats:
        """Statistics of the union of two disjoint sets (new examples joining an estimate)."""
        merged = self.merge(other)
        return FeatureStats(self.count + other.count, merged.mean, merged.var)

    def digest(self) -> str:
        """A short hash of the values (fixed scaling is part of the fingerprint)."""
        h = hashlib.sha256(np.ascontiguousarray(self.mean, "<f8").tobytes())
        h.update(np.ascontiguousarray(self.var, "<f8").tobytes())
        return h.hexdigest()[:12]

    def equals(self, other: FeatureStats | None) -> bool:
        return (other is not None and self.count == other.count and np.array_equal(self.mean, other.mean)
                and np.array_equal(self.var, other.var))

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.tolist(), "var": self.var.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureStats:
        return cls(float(d["count"]), d["mean"], d["var"])

    def __repr__(self) -> str:
        return f"FeatureStats(count={self.count:g}, columns={self.size}, digest={self.digest()})"


@dataclass(frozen=True, eq=False)
class Scaling:
    """How a model scales its inputs: ``none``, ``fixed`` (with ``stats``) or ``network``."""

    mode: str = "none"
    stats: FeatureStats | None = None

    def __post_init__(self) -> None:
        if self.mode not in SCALING_MODES:
            raise ValueError(f"scaling mode must be one of {', '.join(SCALING_MODES)}, got {self.mode!r}")
        if (self.mode == "fixed") != (self.stats is not None):
            raise ValueError("fixed scaling needs its statistics (and only fixed scaling has them)")

    @classmethod
    def none(cls) -> Scaling:
        return cls("none")

    @classmethod
    def network(cls) -> Scaling:
        return cls("network")

    @classmethod
    def fixed(cls, stats: FeatureStats) -> Scaling:
        return cls("fixed", stats)

    @property
    def learned(self) -> bool:
        """True when the statistics travel with the model and are merged by gossip."""
        return self.mode == "network"

    @property
    def tag(self) -> str:
        """What the fingerprint records: nodes that scale differently must not merge."""
        return f"fixed:{self.stats.digest()}" if self.stats is not None else self.mode

    def initial(self, columns: np.ndarray) -> FeatureStats | None:
        """The statistics a node starts from, given its local data's columns."""
        if self.mode == "network":
            return FeatureStats.of(columns)
        return self.stats

    def __repr__(self) -> str:
        return f"Scaling({self.tag})"


#: How many senders' statistics a node remembers to judge the next one by.
STATS_WINDOW = 32
#: Largest outlier score (RMS over columns, in robust scale units) a received estimate may
#: have. Honest label-skewed shares reach ~12 (digits, 30-100 nodes); a liar claiming
#: means of 100 scores 60 or more, even against one share alone.
STATS_MAX_SCORE = 20.0
#: Largest score a received estimate may have against the node's own data's statistics
#: (its anchor; the same score with the anchor as centre, spread and scale). Label-skewed
#: digits shares score <= 12 against each other and <= 7.6 against the pooled statistics;
#: at 8, one of five 30-node consensus runs left a node out of the consensus.
STATS_MAX_ANCHOR_SCORE = 12.0
#: A merged variance is kept at or above this share of the reference's median variance.
#: The pooled variance of honest shares is at least the mean of theirs, so at least half
#: their median: the floor leaves honest consensus a 2x margin (it left the label-skew
#: consensus test's figures unchanged). It stops liars claiming tiny variances, which the
#: score cannot tell from a label-skewed share's (a digit that never inks a pixel), from
#: halving a node's variance with every accepted message.
STATS_VAR_FLOOR = 0.25
#: Consistency constant: 1.4826 x the median absolute deviation estimates a normal's std.
_MAD_TO_STD = 1.4826


class RobustStatsMerge:
    """The statistics merge of one node under network scaling: judge a claim, then merge it.

    Replaces ``ours.merge(theirs)`` for received statistics (issue 10: one message may
    only do bounded harm). A received estimate is scored twice, and dropped (the node
    keeps its statistics) if either score is too high:

    1. Against the *window*: the node's current statistics and those of the last
       :data:`STATS_WINDOW` senders whose claims it accepted, one row per sender (a
       sender pushing often does not fill it; a dropped claim is not remembered, so
       the liars it catches never enter). Centre: the coordinate-wise median of the
       means; spread: the median variance; scale per column: the larger of the
       median std and 1.4826 x the median absolute deviation of the means (a column
       in which honest shares differ, as under label skew, is scaled by how much
       they differ); a column constant everywhere scales by 1, as
       :attr:`FeatureStats.std` does. Score: per column the larger of
       ``|mean - centre|`` and ``|std - median std|`` in scale units, then the root
       mean square over the columns; at most :data:`STATS_MAX_SCORE`.
    2. Against the *anchor*, the statistics of the node's own data at start, over
       the feature columns: the same score with the anchor's mean, variance and std
       as centre, spread and scale; at most :data:`STATS_MAX_ANCHOR_SCORE`. The window follows the
       network, so claims a little off it each time could walk it anywhere; the
       anchor never moves. A node's mean is a running convex combination of its
       anchor's and of claims' means that all lie inside that (convex) radius, so
       it stays inside, whatever the others send.

    An accepted claim is merged as :meth:`FeatureStats.merge` does (:func:`merge_moments`), its count capped at
    the node's own (one message moves a node at most half-way; no count race), and
    the merged variance kept at or above :data:`STATS_VAR_FLOOR` x the window's
    median variance. Nothing the sender claims widens the radii it is judged by.

    Not thread-safe: one instance per node, called from ``GossipNode.on_model``
    (one worker thread at a time).
    """

    def __init__(self, anchor: FeatureStats | None = None, anchored: int | None = None,
                 window: int = STATS_WINDOW, max_score: float = STATS_MAX_SCORE) -> None:
        # The node's own data's statistics, fixed, so no sequence of accepted claims can
        # move what a claim is finally judged by; only its first ``anchored`` columns
        # (the features: a target sorted across nodes, as a ``labels`` split of a
        # regression set is, leaves each node's target spread far too narrow to judge by).
        self._anchored = 0 if anchor is None else anchor.size if anchored is None else anchored
        self._anchor = None if anchor is None or not self._anchored else (
            anchor.mean[:self._anchored], anchor.var[:self._anchored], anchor.std[:self._anchored])
        self.window = window
        self.max_score = max_score
        self._senders: list[str] = []
        # Rows 0..k-1: the remembered senders' means then variances; row k: ours, per call.
        self._rows = np.empty((0, 0))
        self._next = 0  # the row a new sender replaces once the window is full
        self.accepted = 0
        self.rejected = 0

    def _reference(self, ours: FeatureStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre (median mean), median variance and scale per column.

        Medians are the middle order statistic (the upper one of an even count), by
        ``np.partition``: this runs on every message, and ``np.median`` costs twice as much.
        """
        n = ours.size
        if self._rows.shape[1] != 2 * n:
            self._rows = np.empty((self.window + 1, 2 * n))
            self._senders, self._next = [], 0
        k = len(self._senders)
        self._rows[k, :n] = ours.mean
        self._rows[k, n:] = ours.var
        mid = (k + 1) // 2
        middle = np.partition(self._rows[:k + 1], mid, axis=0)[mid]
        centre, var = middle[:n], middle[n:]
        mad = np.partition(np.abs(self._rows[:k + 1, :n] - centre), mid, axis=0)[mid]
        scale = np.maximum(np.sqrt(var), _MAD_TO_STD * mad)
        scale[scale < MIN_STD] = 1.0
        return centre, var, scale

    def score(self, ours: FeatureStats, theirs: FeatureStats) -> float:
        """How far ``theirs`` lies from the window's reference (0: at the centre)."""
        return self._score(theirs.mean, theirs.var, *self._reference(ours))

    def anchor_score(self, theirs: FeatureStats) -> float:
        """How far ``theirs`` lies from the anchor (0 without one)."""
        if self._anchor is None:
            return 0.0
        k = self._anchored
        return self._score(theirs.mean[:k], theirs.var[:k], *self._anchor)

    @staticmethod
    def _score(mean: np.ndarray, var: np.ndarray, centre: np.ndarray, ref_var: np.ndarray,
               scale: np.ndarray) -> float:
        with np.errstate(over="ignore"):  # a liar's 1e300 scores inf and is rejected
            z = np.maximum(np.abs(mean - centre), np.abs(np.sqrt(var) - np.sqrt(ref_var))) / scale
            return float(np.sqrt(np.mean(z * z)))

    def __call__(self, ours: FeatureStats, sender: str, theirs: FeatureStats) -> FeatureStats:
        """``ours`` merged with what ``sender`` claims, or ``ours`` if the claim is an outlier."""
        if theirs.size != ours.size:
            raise ValueError(f"stats of {theirs.size} columns cannot merge into {ours.size}")
        centre, var, scale = self._reference(ours)
        if not (self._score(theirs.mean, theirs.var, centre, var, scale) <= self.max_score  # NaN-safe
                and self.anchor_score(theirs) <= STATS_MAX_ANCHOR_SCORE):
            self.rejected += 1
            return ours
        self.accepted += 1
        self._remember(sender, theirs)
        count, mean, merged_var = merge_moments(ours.count, ours.mean, ours.var,
                                                capped_count(theirs.count, ours.count), theirs.mean, theirs.var)
        return FeatureStats._owned(count, mean, np.maximum(merged_var, STATS_VAR_FLOOR * var))

    def _remember(self, sender: str, theirs: FeatureStats) -> None:
        try:
            row = self._senders.index(sender)
        except ValueError:
            if len(self._senders) < self.window:
                row = len(self._senders)
                self._senders.append(sender)
            else:
                row = self._next
                self._senders[row] = sender
                self._next = (self._next + 1) % self.window
        n = theirs.size
        self._rows[row, :n] = theirs.mean
        self._rows[row, n:] = theirs.var

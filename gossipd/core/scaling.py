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
  what the nodes hold, close to but not exactly the pooled statistics.
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
    mean = a * mean_a + b * mean_b
    var = a * var_a + b * var_b + (a * b) * delta * delta
    return count, mean, var


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

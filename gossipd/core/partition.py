"""Partitioned models: which coordinates of the flat parameter vector form partition k of P.

Coordinate ``i`` belongs to partition ``i mod P``, the same on every node (only
the parameter count and P decide it). Strided rather than contiguous blocks:
the flat vector is layer after layer and, within a layer, output unit after
output unit, so a contiguous block would be one class's weights or one layer;
a push of one block would then move one part of the network wholesale and
leave the rest. Strided, every partition is an even sample of every layer and
unit (as the papers' random subsampling of coordinates is), all partitions are
the same size within one, and the distance over one partition estimates the
distance over the whole model (``RobustMerge`` relies on that).

Pure numpy; the simulator and the batched engine use it as the node does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

__all__ = ["MAX_PARTITIONS", "Layout", "carried_count", "check_partitions", "check_subsample"]

#: The most partitions a model may be cut into: a push carries each one's age as a float64 in a
#: bin of at most the wire's MAX_STR_LEN (1024 bytes).
MAX_PARTITIONS = 128


def check_partitions(p: object) -> None:
    if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= MAX_PARTITIONS:
        raise ValueError(f"must be an integer from 1 to {MAX_PARTITIONS}, got {p!r}")


def check_subsample(f: object) -> None:
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
        raise ValueError(f"must be a fraction in (0, 1], got {f!r}")


def carried_count(partitions: int, subsample: float) -> int:
    """Partitions one push carries: ``round(subsample * P)``, at least one."""
    return max(1, min(partitions, round(subsample * partitions)))


def part_size(n: int, count: int, k: int) -> int:
    """Coordinates in partition ``k`` of an ``n``-parameter model cut into ``count``
    (coordinates k, k + count, ...): ``ceil((n - k) / count)``."""
    return (n - k + count - 1) // count


@dataclass(frozen=True)
class Layout:
    """The partition mapping of an ``n``-parameter model cut into ``count`` partitions."""

    n: int
    count: int
    _index: list[np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_partitions(self.count)
        if self.n < self.count:
            raise ValueError(f"a model of {self.n} parameters cannot be cut into {self.count} partitions")
        object.__setattr__(self, "_index", [np.arange(k, self.n, self.count) for k in range(self.count)])

    @cached_property
    def sizes(self) -> np.ndarray:
        """Coordinates in each partition (:func:`part_size`)."""
        return np.array([part_size(self.n, self.count, k) for k in range(self.count)], dtype=np.int64)

    def coordinates(self, parts: tuple[int, ...] | list[int]) -> np.ndarray:
        """The coordinates of ``parts``, partition after partition (the order values travel in)."""
        if len(parts) == 1:
            return self._index[parts[0]]
        return np.concatenate([self._index[k] for k in parts])

    def size_of(self, parts: tuple[int, ...] | list[int]) -> int:
        return int(sum(int(self.sizes[k]) for k in parts))

    def gather(self, params: np.ndarray, parts: tuple[int, ...]) -> np.ndarray:
        """The values of ``parts`` as one new contiguous float32 vector."""
        if len(parts) == 1:
            return np.ascontiguousarray(params[parts[0]::self.count])
        return np.concatenate([params[k::self.count] for k in parts])

    def expand(self, per_part: np.ndarray, parts: tuple[int, ...]) -> np.ndarray:
        """One value per carried partition, repeated for each of its coordinates."""
        return np.repeat(per_part, self.sizes[list(parts)])

    def choose(self, rng: np.random.Generator, k: int) -> tuple[int, ...]:
        """``k`` distinct partitions, uniformly at random, in increasing order."""
        if k >= self.count:
            return tuple(range(self.count))
        return tuple(sorted(int(i) for i in rng.choice(self.count, size=k, replace=False)))

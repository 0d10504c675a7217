"""The model a node holds: a flat float32 parameter vector and its age (per partition, when cut)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelState:
    """Immutable model snapshot.

    ``age`` counts the training examples this model has seen (merges take the
    larger age). Instances are never mutated: the daemon reads ``node.state``
    from the event loop while a worker thread builds the next one.

    A model cut into partitions (``core/partition.py``) keeps one age per
    partition in ``ages`` (read-only float64), since a push carries only some
    of them and each is merged by its own age; ``age`` is then their mean,
    the age the learner's step size follows. Uncut (one partition, the
    default) ``ages`` is None and ``age`` means what it always did: the
    simulator holds thousands of states, and they cost one pointer more.
    """

    params: np.ndarray
    age: float = 0.0
    ages: np.ndarray | None = None

    def __post_init__(self) -> None:
        params = np.asarray(self.params, dtype=np.float32)
        if params.ndim != 1:
            raise ValueError(f"params must be 1-D, got shape {params.shape}")
        if params.flags.writeable:
            # Copy so that no other holder of the buffer can change a snapshot;
            # read-only input (e.g. np.frombuffer over a received body) is kept as is.
            params = params.copy()
            params.flags.writeable = False
        object.__setattr__(self, "params", params)
        age = float(self.age)
        if self.ages is not None:
            ages = np.array(self.ages, dtype=np.float64).reshape(-1)
            if ages.size < 2 or not np.isfinite(ages).all() or (ages < 0).any():
                raise ValueError(f"ages must be two or more finite numbers >= 0, got {self.ages!r}")
            ages.flags.writeable = False
            object.__setattr__(self, "ages", ages)
            age = float(ages.mean())
        if not np.isfinite(age) or age < 0:
            raise ValueError(f"age must be finite and >= 0, got {self.age!r}")
        object.__setattr__(self, "age", age)

    @classmethod
    def owned(cls, params: np.ndarray, age: float, ages: np.ndarray | None = None) -> ModelState:
        """Wrap a fresh 1-D float32 array nobody else holds, without copying it.

        For the hot path (merge, update), where the array was just computed;
        it is frozen in place. With ``ages`` (a fresh float64 array, also
        frozen), ``age`` is ignored and becomes their mean.
        """
        params.flags.writeable = False
        state = object.__new__(cls)
        object.__setattr__(state, "params", params)
        if ages is not None:
            ages.flags.writeable = False
            age = float(ages.mean())
        object.__setattr__(state, "age", float(age))
        object.__setattr__(state, "ages", ages)
        return state

    @property
    def size(self) -> int:
        return int(self.params.shape[0])

    @property
    def partitions(self) -> int:
        """How many partitions the model is cut into (1: uncut)."""
        return 1 if self.ages is None else int(self.ages.shape[0])

    def with_partitions(self, count: int) -> ModelState:
        """This model cut into ``count`` partitions, each at this age (or uncut for 1); self if it already is."""
        if count == self.partitions:
            return self
        if count == 1:
            return ModelState.owned(self.params, self.age)
        return ModelState.owned(self.params, self.age, np.full(count, self.age))

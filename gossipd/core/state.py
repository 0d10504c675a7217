"""The model a node holds: a flat float32 parameter vector and its age."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelState:
    """Immutable model snapshot.

    ``age`` counts the training examples this model has seen (merges take the
    larger age). Instances are never mutated: the daemon reads ``node.state``
    from the event loop while a worker thread builds the next one.
    """

    params: np.ndarray
    age: float = 0.0

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
        if not np.isfinite(age) or age < 0:
            raise ValueError(f"age must be finite and >= 0, got {self.age!r}")
        object.__setattr__(self, "age", age)

    @classmethod
    def owned(cls, params: np.ndarray, age: float) -> ModelState:
        """Wrap a fresh 1-D float32 array nobody else holds, without copying it.

        For the hot path (merge, update), where the array was just computed;
        it is frozen in place.
        """
        params.flags.writeable = False
        state = object.__new__(cls)
        object.__setattr__(state, "params", params)
        object.__setattr__(state, "age", float(age))
        return state

    @property
    def size(self) -> int:
        return int(self.params.shape[0])

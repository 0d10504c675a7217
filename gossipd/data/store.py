"""A node's examples as they arrive: bounded, oldest out first, with a held-out share.

Each appended example goes, by a draw from the store's own seeded generator,
either to the training part or (with probability ``test_share``) to the
held-out part that keeps scoring the model. Both parts are bounded:
``max_examples`` in total, the held-out part ``ceil(max_examples * test_share)``
of it; when a part is full its oldest examples leave first, so memory stays
flat however long the data keeps coming.

Pure (no I/O, no clock): a driver feeds it rows from files (``tail.py``) or
from the network and hands :meth:`train_data` to the node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gossipd.core.local_data import LocalData
from gossipd.core.spec import Schema
from gossipd.data.examples import DataError


@dataclass(frozen=True, eq=False)
class Appended:
    """What one :meth:`ExampleStore.append` did: rows added to each part, rows evicted, and
    the rows that joined the training part (``new_train``, what a node pools into its
    scaling statistics and takes a pass over)."""

    train: int
    held_out: int
    evicted: int
    new_train: LocalData


class ExampleStore:
    """Bounded local examples of one schema, split between training and held out."""

    def __init__(self, schema: Schema, max_examples: int, test_share: float, rng: np.random.Generator) -> None:
        if max_examples < 1:
            raise DataError(f"max_examples must be >= 1, got {max_examples}")
        if not 0.0 <= test_share < 1.0:
            raise DataError(f"the held-out share must be in [0, 1), got {test_share}")
        self.schema = schema
        self.test_share = test_share
        self.rng = rng
        held = math.ceil(max_examples * test_share) if test_share > 0 else 0
        if held >= max_examples:
            raise DataError(f"max_examples {max_examples} leaves no room for training at a held-out share of "
                            f"{test_share}")
        y_dtype = np.float32 if schema.task == "regression" else np.int64
        d = schema.n_features
        self._train_X = np.empty((0, d), np.float32)
        self._train_y = np.empty(0, y_dtype)
        self._test_X = np.empty((0, d), np.float32)
        self._test_y = np.empty(0, y_dtype)
        self.train_capacity = max_examples - held
        self.test_capacity = held
        self.version = 0  # bumped on every change, so a driver can tell the node's data is stale
        self._train_cache: tuple[int, LocalData] | None = None

    def __len__(self) -> int:
        return int(len(self._train_y) + len(self._test_y))

    def append(self, X: np.ndarray, y: np.ndarray, *, held_out: bool | None = None) -> Appended:
        """Add examples (raw features; class indices or target values, see ``encode_labels``).

        ``held_out``: None draws each example's part (``test_share``); True or False puts
        them all in one part (data that comes already split, e.g. at start-up)."""
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[1] != self.schema.n_features or len(X) != len(y):
            raise DataError(f"examples must have shape (n, {self.schema.n_features}) with n labels, "
                            f"got {X.shape} and {len(y)} labels")
        if not np.isfinite(X).all():
            raise DataError("features contain NaN or Inf")
        if self.schema.task == "classification":
            if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= self.schema.n_classes)):
                raise DataError(f"labels must be class indices in [0, {self.schema.n_classes})")
            y = y.astype(np.int64)
        else:
            y = y.astype(np.float32)
            if not np.isfinite(y).all():
                raise DataError("targets contain NaN or Inf")
        if len(y) == 0:
            return Appended(0, 0, 0, LocalData.for_schema(X, y, self.schema))
        if held_out is not None:
            held = np.full(len(y), held_out)
        elif self.test_share > 0:
            held = self.rng.random(len(y)) < self.test_share
        else:
            held = np.zeros(len(y), bool)
        before = len(self)
        self._train_X, self._train_y = _keep_newest(self._train_X, self._train_y, X[~held], y[~held],
                                                    self.train_capacity)
        self._test_X, self._test_y = _keep_newest(self._test_X, self._test_y, X[held], y[held], self.test_capacity)
        self.version += 1
        n_test = int(held.sum())
        return Appended(len(y) - n_test, n_test, before + len(y) - len(self),
                        LocalData.for_schema(X[~held], y[~held], self.schema))

    def train_data(self) -> LocalData:
        """The training part as the node's LocalData (rebuilt only after a change)."""
        if self._train_cache is None or self._train_cache[0] != self.version:
            self._train_cache = (self.version, LocalData.for_schema(self._train_X, self._train_y, self.schema))
        return self._train_cache[1]

    def held_out(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out part (X, y) that scores the model."""
        return self._test_X, self._test_y

    @property
    def n_train(self) -> int:
        return int(len(self._train_y))

    @property
    def n_held_out(self) -> int:
        return int(len(self._test_y))


def _keep_newest(X: np.ndarray, y: np.ndarray, new_X: np.ndarray, new_y: np.ndarray,
                 capacity: int) -> tuple[np.ndarray, np.ndarray]:
    if len(new_y) == 0:
        return X, y
    if capacity == 0:
        return X[:0], y[:0]
    return np.concatenate([X, new_X])[-capacity:], np.concatenate([y, new_y])[-capacity:]

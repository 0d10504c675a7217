"""A node's training examples: numpy only, so that data handling never needs torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossipd.core.spec import Schema


@dataclass(frozen=True, eq=False)
class LocalData:
    """A node's training examples, raw (unscaled); numpy, converted once.

    X: float32 ``(n, n_features)``; y: int64 class indices (classification) or
    float32 values (regression); target: float32, one-hot ``(n, C)`` or the
    values as ``(n, 1)``: what the hand-written gradient subtracts.
    The arrays are never modified after construction.
    """

    X: np.ndarray
    y: np.ndarray
    target: np.ndarray

    @classmethod
    def from_numpy(cls, X: np.ndarray, y: np.ndarray, n_classes: int) -> LocalData:
        """Classification data: labels are class indices in ``[0, n_classes)``."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        if len(X) != len(y):
            raise ValueError(f"{len(X)} rows of features but {len(y)} labels")
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"labels must be class indices in [0, {n_classes})")
        onehot = np.zeros((len(y), n_classes), dtype=np.float32)
        onehot[np.arange(len(y)), y] = 1.0
        return cls(X, y, onehot)

    @classmethod
    def regression(cls, X: np.ndarray, y: np.ndarray) -> LocalData:
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.float32).reshape(-1)
        if len(X) != len(y):
            raise ValueError(f"{len(X)} rows of features but {len(y)} targets")
        return cls(X, y, y.reshape(-1, 1).copy())

    @classmethod
    def for_schema(cls, X: np.ndarray, y: np.ndarray, schema: Schema) -> LocalData:
        if schema.task == "regression":
            return cls.regression(X, y)
        return cls.from_numpy(X, y, schema.n_classes)

    @property
    def is_regression(self) -> bool:
        return self.y.dtype != np.int64

    def columns(self) -> np.ndarray:
        """The columns the scaler describes: the features, then the target for regression."""
        if self.is_regression:
            return np.hstack([self.X, self.target])
        return self.X

    def __len__(self) -> int:
        return int(self.y.shape[0])

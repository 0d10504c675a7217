"""Examples as loaded, before any split, and what the data says about its task.

Every loader (bundled sets, CSV, NPZ, a directory, a Python function) returns
:class:`Examples`: raw float features, raw labels (strings or numbers, as
written), feature names, and optionally what the source declares (task, input
shape, class names). :func:`infer_task` and :func:`encode_labels` turn them
into what a model needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gossipd.core.spec import Schema

#: Whole-number labels with at most this many distinct values are taken for classes.
MAX_INFERRED_CLASSES = 20


class DataError(ValueError):
    """A dataset, split, share or data file the user gave cannot be used."""


@dataclass(frozen=True, eq=False)
class Examples:
    """Raw rows: X float64 ``(n, d)``; y as written (strings or numbers)."""

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...] = ()
    input_shape: tuple[int, ...] = ()
    task: str | None = None  # what the source declares, if anything
    class_names: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(len(self.y))

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


def _as_numbers(y: np.ndarray) -> np.ndarray | None:
    """``y`` as float64 if every value is a number (numeric strings included), else None."""
    if y.dtype.kind in "biuf":
        return y.astype(np.float64)
    try:
        return np.array([float(v) for v in y], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def infer_task(y: np.ndarray, declared: str | None, where: str) -> str:
    """``declared`` if given (and possible), else what ``y`` unambiguously is.

    Labels that are not all numbers: classification. Numbers with a fraction:
    regression. Whole numbers: classification when at most
    ``MAX_INFERRED_CLASSES`` distinct values, otherwise ambiguous (counts?
    many classes?) and the user must say.
    """
    numbers = _as_numbers(y)
    if declared == "regression":
        if numbers is None:
            raise DataError(f"{where}: regression needs numeric targets, the labels include text")
        if not np.isfinite(numbers).all():
            raise DataError(f"{where}: regression targets contain NaN or Inf")
        return declared
    if declared == "classification" or numbers is None:
        return "classification"
    if not np.isfinite(numbers).all():
        raise DataError(f"{where}: labels contain NaN or Inf")
    if (numbers != np.round(numbers)).any():
        return "regression"
    distinct = len(np.unique(numbers))
    if distinct <= MAX_INFERRED_CLASSES:
        return "classification"
    raise DataError(f"{where}: the labels are {distinct} distinct whole numbers, which could be classes or "
                    "values; say which with task = classification | regression (--task)")


def class_names_of(y: np.ndarray) -> tuple[str, ...]:
    """Sorted class names: numerically when every label is a whole number, else as text."""
    numbers = _as_numbers(y)
    if numbers is not None and np.isfinite(numbers).all() and (numbers == np.round(numbers)).all():
        return tuple(str(int(v)) for v in np.unique(numbers))
    return tuple(str(v) for v in np.unique(np.asarray(y).astype(str)))


def _names(y: np.ndarray) -> np.ndarray:
    numbers = _as_numbers(y)
    if numbers is not None and np.isfinite(numbers).all() and (numbers == np.round(numbers)).all():
        return np.array([str(int(v)) for v in numbers])
    return np.asarray(y).astype(str)


def encode_labels(y: np.ndarray, schema: Schema, where: str = "data") -> np.ndarray:
    """Raw labels -> int64 class indices into ``schema.class_names`` (classification)
    or float32 targets (regression); a DataError names the first unknown label."""
    if schema.task == "regression":
        numbers = _as_numbers(np.asarray(y))
        if numbers is None or not np.isfinite(numbers).all():
            raise DataError(f"{where}: regression targets must be finite numbers")
        return numbers.astype(np.float32)
    index = {name: i for i, name in enumerate(schema.class_names)}
    names = _names(np.asarray(y))
    out = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        k = index.get(name)
        if k is None:
            raise DataError(f"{where}: label {str(name)!r} is not one of the model's classes "
                            f"({', '.join(schema.class_names)})")
        out[i] = k
    return out


def default_feature_names(n: int) -> tuple[str, ...]:
    return tuple(f"x{i}" for i in range(n))

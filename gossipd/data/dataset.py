"""A Dataset: examples with their schema, split into a training and a test part.

Features stay raw: scaling is part of the model (``gossipd.core.scaling``), so
the same numbers go into training, evaluation and the exported ONNX file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gossipd.core.spec import Schema
from gossipd.data.examples import DataError, Examples, class_names_of, encode_labels, infer_task
from gossipd.data.sources import load_raw
from gossipd.data.splits import DEFAULT_SPLIT_SEED, parse_share, split_indices, train_test_indices


@dataclass(frozen=True)
class Dataset:
    """A train/test split of raw features (float32) and labels (int64 class
    indices into ``schema.class_names``) or targets (float32, regression)."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    schema: Schema

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        return self.schema.n_classes

    @property
    def task(self) -> str:
        return self.schema.task


def schema_of(ex: Examples, *, task: str | None = None, input_shape: tuple[int, ...] | None = None,
              where: str = "data") -> Schema:
    """The schema ``ex`` implies: task (declared, configured or inferred), shapes, names."""
    if task is not None and ex.task is not None and task != ex.task:
        raise DataError(f"{where} is a {ex.task} data set, not {task}")
    task = infer_task(ex.y, task or ex.task, where)
    shape = tuple(input_shape or ex.input_shape or (ex.n_features,))
    if int(np.prod(shape)) != ex.n_features:
        raise DataError(f"{where}: input shape {'x'.join(map(str, shape))} holds {int(np.prod(shape))} values, "
                        f"the data has {ex.n_features} features")
    if task == "regression":
        return Schema("regression", shape, 1, ex.feature_names)
    classes = ex.class_names or class_names_of(ex.y)
    if len(classes) < 2:
        raise DataError(f"{where}: need at least two classes, found {len(classes)}")
    return Schema("classification", shape, len(classes), ex.feature_names, classes)


def _check_splittable(source: str, y: np.ndarray, classes: tuple[str, ...], test_size: float) -> None:
    """The stratified train/test split needs every class twice and each part to hold every class."""
    counts = np.bincount(y, minlength=len(classes))
    rare = int(np.argmin(counts))
    if counts[rare] < 2:
        raise DataError(f"{source}: class {classes[rare]!r} has only {counts[rare]} example; "
                        "the stratified test split needs at least 2 of each class")
    n, k = len(y), len(classes)
    n_test = math.ceil(test_size * n)
    if n_test < k or n - n_test < k:
        need = next(m for m in range(2 * k, 100 * k + 100) if k <= math.ceil(test_size * m) <= m - k)
        raise DataError(f"{source}: {n} rows are too few for a stratified {test_size:.0%} test split of "
                        f"{k} classes; need at least {need}")


def load_dataset(
    source: str,
    *,
    seed: int = DEFAULT_SPLIT_SEED,
    test_size: float = 0.25,
    label_column: str | None = None,
    task: str | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Dataset:
    """Load ``source`` and split it 75/25 (stratified by class for classification).
    ``task``: None infers it from the labels (see ``infer_task``)."""
    ex = load_raw(source, label_column=label_column)
    return dataset_of(ex, source, seed=seed, test_size=test_size, task=task, input_shape=input_shape)


def dataset_of(
    ex: Examples,
    source: str,
    *,
    seed: int = DEFAULT_SPLIT_SEED,
    test_size: float = 0.25,
    task: str | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Dataset:
    """:func:`load_dataset` on examples already read (e.g. by a :class:`SourceTail`'s first
    poll); ``source`` names them in errors."""
    if not np.isfinite(ex.X).all():
        raise DataError(f"{source}: features contain NaN or Inf")
    schema = schema_of(ex, task=task, input_shape=input_shape, where=source)
    y = encode_labels(ex.y, schema, source)
    stratify = schema.task == "classification"
    if stratify:
        _check_splittable(source, y, schema.class_names, test_size)
    try:
        train, test = train_test_indices(y, test_size, seed, stratify)
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    return Dataset(name=ex.name, X_train=ex.X[train].astype(np.float32), y_train=y[train],
                   X_test=ex.X[test].astype(np.float32), y_test=y[test], schema=schema)


def node_share(
    dataset: Dataset, share: str, split: str, *, seed: int = DEFAULT_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The training part ``K/N`` under ``split``, and the K-th iid share of the test set.

    The test share is cut iid whatever the training split, so each node's own
    accuracy estimates the same quantity: accuracy on the common task.
    """
    k, n = parse_share(share)
    rng = np.random.default_rng(seed)
    train_parts = split_indices(dataset.y_train, n, split, rng)
    test_parts = split_indices(dataset.y_test, n, "iid", rng)
    tr, te = train_parts[k - 1], test_parts[k - 1]
    return dataset.X_train[tr], dataset.y_train[tr], dataset.X_test[te], dataset.y_test[te]

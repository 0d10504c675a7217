"""A daemon's local examples: what it loads at start-up, then rows that keep arriving.

At start-up the data set (bundled, a file, a directory of files, a loader) is
loaded and split 75/25 as everywhere; the node keeps share K/N of it in a
bounded :class:`~gossipd.data.ExampleStore`, its test share held out. A CSV
file or a directory is then followed: the :class:`~gossipd.data.SourceTail`'s
first poll *is* the start-up data, so no row is read twice or missed between
loading and following, and each later poll returns the rows appended since
(all of them: the share K/N applies to the start-up data). Rows sent to
``POST /v1/data`` join the same way. Either way the labels are encoded
against the classes fixed at start-up (a label the model does not know is an
error naming it), and the store draws which rows are held out.

Threads: :meth:`DataFeed.poll` reads files (run it off the event loop);
:meth:`DataFeed.add` changes the store and runs in the daemon's trainer
thread, the only thread that touches the store and the node's data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gossipd.core.spec import Schema, parse_input_shape, parse_task
from gossipd.data import DataError, ExampleStore, Examples, SourceTail, dataset_of, encode_labels, load_dataset
from gossipd.data import node_share
from gossipd.data.sources import followable, with_feature_names
from gossipd.data.store import Appended

#: Most rows one POST /v1/data or /v1/predict may carry.
MAX_REQUEST_ROWS = 10_000


@dataclass
class FeedCounts:
    """What arrived after start-up (status and logs)."""

    arrived: int = 0  # rows taken into the store
    evicted: int = 0  # rows that left it to make room
    refused: int = 0  # rows refused (bad label, bad values)


class DataFeed:
    """The store of one daemon's examples, the source it follows (if any) and its schema."""

    def __init__(self, schema: Schema, store: ExampleStore, tail: SourceTail | None, source: str) -> None:
        self.schema = schema
        self.store = store
        self.tail = tail
        self.source = source
        self.counts = FeedCounts()

    @classmethod
    def load(cls, source: str, *, share: str, split: str, label_column: str = "", task: str = "auto",
             input_shape: str = "", max_examples: int, test_share: float, follow: bool,
             rng: np.random.Generator) -> DataFeed:
        """Load ``source`` (DataError, ValueError name the problem) and, with ``follow``, follow it
        when it can grow (a CSV file, a directory)."""
        declared_task = parse_task(task)
        shape = parse_input_shape(input_shape) if input_shape else None
        label = label_column or None
        tail = None
        if follow and followable(source):
            tail = SourceTail(source, label_column=label)
            ex = tail.poll()
            if ex is None:
                raise DataError(f"{source}: no complete rows yet (the daemon needs some to know the columns "
                                "and the classes)")
            dataset = dataset_of(with_feature_names(ex), source, task=declared_task, input_shape=shape)
        else:
            dataset = load_dataset(source, label_column=label, task=declared_task, input_shape=shape)
        X_tr, y_tr, X_te, y_te = node_share(dataset, share, split)
        store = ExampleStore(dataset.schema, max_examples, test_share, rng)
        store.append(X_tr, y_tr, held_out=False)
        store.append(X_te, y_te, held_out=True)
        return cls(dataset.schema, store, tail, source)

    # -- arriving rows ------------------------------------------------------------------

    def poll(self) -> Examples | None:
        """Rows added to the followed source since the last poll (None: none, or no source).
        Reads files: not on the event loop. DataError names file and line."""
        return None if self.tail is None else self.tail.poll()

    def add(self, X: np.ndarray, labels: np.ndarray, where: str) -> Appended:
        """Raw features and labels as written (class names or numbers) into the store
        (trainer thread). DataError if a label is unknown or a value is not a finite number;
        then nothing is added."""
        try:
            y = encode_labels(np.asarray(labels), self.schema, where)
            got = self.store.append(np.asarray(X, dtype=np.float32), y)
        except DataError:
            self.counts.refused += len(labels)
            raise
        self.counts.arrived += len(y)
        self.counts.evicted += got.evicted
        return got

    # -- reports ------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        return {"train_examples": self.store.n_train, "test_examples": self.store.n_held_out,
                "max_examples": self.store.train_capacity + self.store.test_capacity,
                "following": None if self.tail is None else str(self.tail.path),
                "arrived": self.counts.arrived, "evicted": self.counts.evicted, "refused": self.counts.refused}


# -- request bodies ---------------------------------------------------------------------


def rows_of(doc: Any, n_features: int, *, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``{"rows": [[x, ...], ...], "labels": [...]}`` (a decoded JSON or msgpack body) ->
    float32 rows ``(n, n_features)`` and the labels as written; DataError names what is wrong."""
    if not isinstance(doc, dict) or "rows" not in doc:
        raise DataError('expected an object {"rows": [[feature, ...], ...]' + (', "labels": [...]}' if labels else "}"))
    rows = doc["rows"]
    if not isinstance(rows, list) or not rows:
        raise DataError('"rows" must be a non-empty list of rows')
    if len(rows) > MAX_REQUEST_ROWS:
        raise DataError(f'at most {MAX_REQUEST_ROWS} rows per request, got {len(rows)}')
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n_features:
            size = len(row) if isinstance(row, list) else type(row).__name__
            raise DataError(f"row {i}: expected a list of {n_features} numbers, got {size}")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise DataError(f"row {i}, feature {j}: expected a finite number, got {v!r}")
    X = np.array(rows, dtype=np.float64).astype(np.float32)
    if not np.isfinite(X).all():
        raise DataError("a feature is too large for float32")
    if not labels:
        return X, None
    y = doc.get("labels")
    if not isinstance(y, list) or len(y) != len(rows):
        raise DataError(f'"labels" must be a list of {len(rows)} labels, one per row')
    for i, v in enumerate(y):
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise DataError(f"label {i}: expected a class name or a number, got {v!r}")
    return X, np.array(y, dtype=object)

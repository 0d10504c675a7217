"""Reading examples: CSV and NPZ files, a directory of them, or a user's function.

CSV: a header row naming the columns, then one example per line. The label
column is ``label_column`` (default: the first of ``label``, ``target``, ``y``,
``class``, else the last column); every other column is a numeric feature. A
value that is not a finite number is an error naming the file, line and column.

NPZ: arrays ``X`` (``(n, d)``, or ``(n, C, H, W)`` etc.: the extra axes become
the input shape) and ``y`` (``(n,)``); optionally ``feature_names`` and
``class_names`` (string arrays). Loaded with ``allow_pickle=False``.

Directory: every ``*.csv`` and ``*.npz`` in it, in name order (names starting
with ``.`` are skipped, so a writer can create ``.part`` files and rename them);
all must have the same columns.

``python:PATH.py:LOADER`` / ``pkg.module:LOADER``: a function called with no
arguments that returns ``(X, y)`` or a mapping with ``X``, ``y`` and optionally
``feature_names``, ``class_names``, ``input_shape`` and ``task``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gossipd.core.plugin import PluginError, resolve, split_reference
from gossipd.data.bundled import BUNDLED, load_bundled
from gossipd.data.examples import DataError, Examples, default_feature_names

LABEL_CANDIDATES = ("label", "target", "y", "class")
FILE_SUFFIXES = (".csv", ".npz")


def label_index(header: list[str], label_column: str | None, where: str) -> int:
    if label_column is None:
        label_column = next((c for c in LABEL_CANDIDATES if c in header), header[-1])
    if label_column not in header:
        raise DataError(f"{where}: no label column {label_column!r} (columns: {', '.join(header)})")
    if len(header) < 2:
        raise DataError(f"{where}: needs at least one feature column besides the label {label_column!r}")
    return header.index(label_column)


def parse_csv_rows(rows: Iterable[tuple[int, list[str]]], header: list[str], li: int,
                   where: str) -> tuple[np.ndarray, np.ndarray]:
    """Numbered rows -> (features, labels); a DataError names the line and column of a bad value."""
    X: list[list[float]] = []
    y: list[str] = []
    width = len(header)
    for line, row in rows:
        if not row:
            continue  # csv gives [] for a blank line (e.g. a trailing one)
        if len(row) != width:
            raise DataError(f"{where}: line {line} has {len(row)} columns, the header has {width}")
        values = []
        for j, v in enumerate(row):
            if j == li:
                continue
            try:
                f = float(v)
            except ValueError:
                raise DataError(f"{where}: line {line}, column {header[j]!r}: {v!r} is not a number (features "
                                f"must be numeric; the label column is {header[li]!r})") from None
            if not math.isfinite(f):
                raise DataError(f"{where}: line {line}, column {header[j]!r}: {v!r} is not a finite number")
            values.append(f)
        X.append(values)
        y.append(row[li].strip())
    return np.array(X, dtype=np.float64).reshape(len(X), width - 1), np.array(y, dtype=str)


def read_csv_text(text: str, where: str, label_column: str | None,
                  first_line: int = 1) -> tuple[list[str], int, np.ndarray, np.ndarray]:
    """A CSV document (header first) -> (header, label index, X, y)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{where}: empty file; expected a header row") from None
    li = label_index(header, label_column, where)
    X, y = parse_csv_rows(((first_line + 1 + i, r) for i, r in enumerate(reader)), header, li, where)
    return header, li, X, y


def read_csv(path: Path, label_column: str | None) -> Examples:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text (UTF-8) file") from None
    header, li, X, y = read_csv_text(text, str(path), label_column)
    if len(y) == 0:
        raise DataError(f"{path}: expected a header row and at least one data row")
    names = tuple(h for j, h in enumerate(header) if j != li)
    return Examples(path.stem, X, y, feature_names=names)


def read_npz(path: Path) -> Examples:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"X", "y"} - set(npz.files)
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(sorted(missing))} (need X and y)")
            X, y = np.asarray(npz["X"]), np.asarray(npz["y"])
            features = tuple(str(f) for f in npz["feature_names"]) if "feature_names" in npz.files else ()
            classes = tuple(str(c) for c in npz["class_names"]) if "class_names" in npz.files else ()
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    return _arrays(path.stem, str(path), X, y, features, classes)


def _arrays(name: str, where: str, X: Any, y: Any, features: tuple[str, ...] = (), classes: tuple[str, ...] = (),
            input_shape: tuple[int, ...] = (), task: str | None = None) -> Examples:
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: X must be numbers") from None
    y = np.asarray(y)
    if X.ndim < 2 or y.ndim != 1 or len(X) != len(y):
        raise DataError(f"{where}: need X of shape (n, d) (or (n, C, H, W)) and y of shape (n,), "
                        f"got {X.shape} and {y.shape}")
    shape = tuple(X.shape[1:]) if X.ndim > 2 else tuple(input_shape)
    X = X.reshape(len(X), -1)
    if not np.isfinite(X).all():
        raise DataError(f"{where}: features contain NaN or Inf")
    if features and len(features) != X.shape[1]:
        raise DataError(f"{where}: {len(features)} feature names for {X.shape[1]} features")
    return Examples(name, X, y, features, shape, task, classes)


def read_file(path: Path, label_column: str | None) -> Examples:
    if path.suffix.lower() == ".csv":
        return read_csv(path, label_column)
    return read_npz(path)


def data_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in FILE_SUFFIXES and not p.name.startswith("."))


def concat(name: str, parts: list[Examples], where: str) -> Examples:
    """One Examples from several with the same columns."""
    first = parts[0]
    for p in parts[1:]:
        if p.n_features != first.n_features or (p.feature_names and first.feature_names
                                                and p.feature_names != first.feature_names):
            raise DataError(f"{where}: {p.name} has other columns than {first.name} "
                            f"({', '.join(p.feature_names) or p.n_features} vs "
                            f"{', '.join(first.feature_names) or first.n_features})")
    y = np.concatenate([p.y.astype(str) if p.y.dtype.kind in "USO" else p.y for p in parts])
    return Examples(name, np.concatenate([p.X for p in parts]), y, first.feature_names, first.input_shape,
                    first.task, first.class_names)


def read_dir(directory: Path, label_column: str | None) -> Examples:
    files = data_files(directory)
    if not files:
        raise DataError(f"{directory}: no .csv or .npz files in this directory")
    return concat(directory.name, [read_file(f, label_column) for f in files], str(directory))


def read_python(kind: str, target: str, attr: str, text: str) -> Examples:
    try:
        fn = resolve(kind, target, attr)
    except PluginError as exc:
        raise DataError(f"dataset {text!r}: {exc}") from None
    try:
        out = fn()
    except Exception as exc:  # the user's loader may raise anything
        raise DataError(f"dataset {text!r}: the loader failed: {type(exc).__name__}: {exc}") from None
    if isinstance(out, Mapping):
        if "X" not in out or "y" not in out:
            raise DataError(f"dataset {text!r}: the loader's mapping needs keys X and y")
        shape = tuple(int(s) for s in out.get("input_shape") or ())
        return _arrays(attr, f"dataset {text!r}", out["X"], out["y"],
                       tuple(str(f) for f in out.get("feature_names") or ()),
                       tuple(str(c) for c in out.get("class_names") or ()), shape, out.get("task"))
    if isinstance(out, tuple) and len(out) == 2:
        return _arrays(attr, f"dataset {text!r}", *out)
    raise DataError(f"dataset {text!r}: the loader must return (X, y) or a mapping with X and y, "
                    f"got {type(out).__name__}")


def load_raw(source: str, *, label_column: str | None = None) -> Examples:
    """The examples of a bundled set, a .csv/.npz file, a directory of them, or a loader."""
    if source in BUNDLED:
        ex = load_bundled(source)
    else:
        ref = split_reference(source)
        path = Path(source)
        if ref is not None:
            ex = read_python(*ref, source)
        elif path.is_dir():
            ex = read_dir(path, label_column)
        elif path.suffix.lower() in FILE_SUFFIXES:
            if not path.is_file():
                raise DataError(f"data file not found: {source}")
            ex = read_file(path, label_column)
        else:
            raise DataError(f"unknown dataset {source!r}; expected one of {', '.join(BUNDLED)}, a .csv/.npz file, "
                            "a directory of them, or python:PATH.py:LOADER / pkg.module:LOADER")
    return with_feature_names(ex)


def with_feature_names(ex: Examples) -> Examples:
    """``ex``, with ``x0, x1, ...`` for feature names if the source gave none."""
    if ex.feature_names:
        return ex
    return Examples(ex.name, ex.X, ex.y, default_feature_names(ex.n_features), ex.input_shape, ex.task,
                    ex.class_names)


def followable(source: str) -> bool:
    """True if ``source`` is data that can grow: a CSV file or a directory (see SourceTail)."""
    if source in BUNDLED or split_reference(source) is not None:
        return False
    path = Path(source)
    return path.is_dir() or (path.suffix.lower() == ".csv" and path.is_file())

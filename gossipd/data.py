"""Data: bundled real data sets, user files, the test split, splits and shares.

Vocabulary (the same in flags, TOML, environment and JSON): the *dataset* is
what is loaded; the *split* is how its training part is cut into N parts
(``iid`` | ``labels`` | ``dirichlet:ALPHA``); a *share* ``K/N`` is the part one
daemon holds.

Everything that cuts data takes a seed, so the same seed gives the same split on
every machine: N daemons told ``1/N`` ... ``N/N`` hold disjoint parts of one
training split without talking to each other.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gossipd.core.scaling import MAX_STAT_COLUMNS, FeatureStats, Scaling
from gossipd.core.spec import Schema, parse_scaling

BUNDLED = ("digits", "breast_cancer", "wine", "diabetes")
SPLITS = ("iid", "labels", "dirichlet:ALPHA")
# Fixed so that independently started daemons agree on the split.
DEFAULT_SPLIT_SEED = 0


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


class DataError(ValueError):
    """A dataset, split or share the user gave cannot be used."""


def _load_bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets  # imported lazily: scikit-learn is slow to import

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }[name]
    bunch = loader()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


def _load_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header row and at least one data row")
    header = rows[0]
    body = [r for r in rows[1:] if r]  # csv gives [] for blank lines (e.g. a trailing one)
    for i, r in enumerate(rows[1:], start=2):
        if r and len(r) != len(header):
            raise DataError(f"{path}: line {i} has {len(r)} columns, the header has {len(header)}")
    if label_column is None:
        for candidate in ("label", "target", "y", "class"):
            if candidate in header:
                label_column = candidate
                break
        else:
            label_column = header[-1]
    if label_column not in header:
        raise DataError(f"{path}: no label column {label_column!r} (columns: {', '.join(header)})")
    li = header.index(label_column)
    try:
        X = np.array([[float(v) for j, v in enumerate(r) if j != li] for r in body])
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric feature value ({exc})") from None
    if X.ndim != 2 or X.shape[1] != len(header) - 1:
        raise DataError(f"{path}: rows have differing numbers of columns")
    return X, np.array([r[li] for r in body])


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        missing = {"X", "y"} - set(npz.files)
        if missing:
            raise DataError(f"{path}: missing array(s) {', '.join(sorted(missing))} (need X and y)")
        X, y = np.asarray(npz["X"], dtype=np.float64), np.asarray(npz["y"])
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise DataError(f"{path}: need X of shape (n, d) and y of shape (n,), got {X.shape} and {y.shape}")
    return X, y


def load_raw(source: str, *, label_column: str | None = None) -> tuple[str, np.ndarray, np.ndarray]:
    """Name, features and labels of a bundled set or a ``.csv`` / ``.npz`` file."""
    if source in BUNDLED:
        X, y = _load_bundled(source)
        return source, X, y
    path = Path(source)
    if path.suffix.lower() in (".csv", ".npz"):
        if not path.is_file():
            raise DataError(f"data file not found: {source}")
        X, y = _load_csv(path, label_column) if path.suffix.lower() == ".csv" else _load_npz(path)
        return path.stem, X, y
    raise DataError(f"unknown data set {source!r}; expected one of {', '.join(BUNDLED)} or a .csv/.npz path")


def load_dataset(
    source: str,
    *,
    seed: int = DEFAULT_SPLIT_SEED,
    test_size: float = 0.25,
    label_column: str | None = None,
) -> Dataset:
    """Load and split 75/25 (stratified by label for classification). Features stay
    raw: scaling is part of the model (``gossipd.core.scaling``)."""
    from sklearn.model_selection import train_test_split

    name, X, y_raw = load_raw(source, label_column=label_column)
    if not np.isfinite(X).all():
        raise DataError(f"{source}: features contain NaN or Inf")
    if name == "diabetes":
        schema = Schema.regression(X.shape[1])
        y = np.asarray(y_raw, dtype=np.float32)
        stratify = None
    else:
        classes, y = np.unique(y_raw, return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"{source}: need at least two classes, found {len(classes)}")
        shape = (1, 8, 8) if name == "digits" else (X.shape[1],)
        schema = Schema("classification", shape, len(classes), class_names=tuple(str(c) for c in classes))
        stratify = y
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=stratify
    )
    ydt = np.float32 if schema.task == "regression" else np.int64
    return Dataset(
        name=name,
        X_train=X_tr.astype(np.float32),
        y_train=y_tr.astype(ydt),
        X_test=X_te.astype(np.float32),
        y_test=y_te.astype(ydt),
        schema=schema,
    )


def parse_split(spec: str) -> tuple[str, float | None]:
    """Validate ``iid`` | ``labels`` | ``dirichlet:ALPHA`` (ALPHA > 0)."""
    name, _, arg = spec.strip().partition(":")
    if name in ("iid", "labels") and not arg:
        return name, None
    if name == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            raise DataError(f"split 'dirichlet:ALPHA' needs a number, got {spec!r}") from None
        if not np.isfinite(alpha) or alpha <= 0:
            raise DataError(f"dirichlet ALPHA must be > 0, got {spec!r}")
        return name, alpha
    raise DataError(f"unknown split {spec!r}; expected one of {', '.join(SPLITS)}")


def split_indices(y: np.ndarray, n_parts: int, spec: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of ``y`` cut into ``n_parts`` disjoint parts that cover it.

    ``iid``: a random permutation cut into near-equal parts. ``labels``: sorted
    by label (random order within a label) and cut into contiguous shards, so
    most parts hold one or two classes. ``dirichlet:ALPHA``: each class spread
    over the parts by Dirichlet(ALPHA) proportions (small ALPHA, more skew).
    """
    if n_parts < 1:
        raise DataError(f"number of parts must be >= 1, got {n_parts}")
    name, alpha = parse_split(spec)
    n = len(y)
    if name == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(n), n_parts)]
    if name == "labels":
        order = rng.permutation(n)
        order = order[np.argsort(y[order], kind="stable")]
        return [np.sort(p) for p in np.array_split(order, n_parts)]
    assert alpha is not None
    parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        props = rng.dirichlet(np.full(n_parts, alpha))
        cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def parse_share(spec: str) -> tuple[int, int]:
    """``K/N`` (1-based) -> (K, N), e.g. ``3/10``: this node holds part 3 of 10."""
    try:
        k_s, n_s = spec.split("/")
        k, n = int(k_s), int(n_s)
    except ValueError:
        raise DataError(f"share must look like K/N (e.g. 3/10), got {spec!r}") from None
    if n < 1 or not 1 <= k <= n:
        raise DataError(f"share K/N needs 1 <= K <= N, got {spec!r}")
    return k, n


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


def make_scaling(spec: str, schema: Schema) -> Scaling:
    """``network`` | ``none`` | ``fixed:PATH`` -> the model's :class:`Scaling`.

    A fixed-statistics file is JSON ``{"mean": [...], "std": [...]}`` with one
    entry per feature (for regression, optionally ``"target_mean"`` and
    ``"target_std"``; without them the target is not scaled), or an NPZ with
    the same arrays.
    """
    try:
        mode, path = parse_scaling(spec)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if mode == "none":
        return Scaling.none()
    if mode == "network":
        if schema.n_stat_columns > MAX_STAT_COLUMNS:
            raise DataError(f"scaling 'network' carries statistics of at most {MAX_STAT_COLUMNS} columns in a "
                            f"model message; this data has {schema.n_stat_columns}: use fixed:PATH or none")
        return Scaling.network()
    return Scaling.fixed(_load_fixed_stats(Path(path), schema))


def _load_fixed_stats(path: Path, schema: Schema) -> FeatureStats:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                raw = {k: npz[k] for k in npz.files}
        else:
            raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"scaling file {path} not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"scaling file {path}: cannot read it ({exc})") from None
    if not isinstance(raw, dict) or "mean" not in raw or "std" not in raw:
        raise DataError(f"scaling file {path}: needs 'mean' and 'std' (one number per feature)")
    try:
        mean = np.asarray(raw["mean"], dtype=np.float64).reshape(-1)
        std = np.asarray(raw["std"], dtype=np.float64).reshape(-1)
        if schema.task == "regression":
            mean = np.append(mean, float(raw.get("target_mean", 0.0)))
            std = np.append(std, float(raw.get("target_std", 1.0)))
    except (TypeError, ValueError) as exc:
        raise DataError(f"scaling file {path}: values must be numbers ({exc})") from None
    if mean.shape != std.shape or mean.size != schema.n_stat_columns:
        raise DataError(f"scaling file {path}: {mean.size} means and {std.size} stds for "
                        f"{schema.n_features} features")
    try:
        return FeatureStats.fixed(mean, std)
    except ValueError as exc:
        raise DataError(f"scaling file {path}: {exc}") from None

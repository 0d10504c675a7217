"""Cutting data: the split of a training set into N parts, and one daemon's share.

Vocabulary (the same in flags, TOML, environment and JSON): the *dataset* is
what is loaded; the *split* is how its training part is cut into N parts
(``iid`` | ``labels`` | ``dirichlet:ALPHA``); a *share* ``K/N`` is the part one
daemon holds.

Everything that cuts data takes a seed, so the same seed gives the same split on
every machine: N daemons told ``1/N`` ... ``N/N`` hold disjoint parts of one
training split without talking to each other.
"""

from __future__ import annotations

import math

import numpy as np

from gossipd.data.examples import DataError

SPLITS = ("iid", "labels", "dirichlet:ALPHA")
# Fixed so that independently started daemons agree on the split.
DEFAULT_SPLIT_SEED = 0
REGRESSION_BINS = 10


def _groups(y: np.ndarray) -> np.ndarray:
    """Class labels as they are; float targets as quantile bins."""
    if y.dtype.kind != "f":
        return y
    edges = np.quantile(y, np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1])
    return np.searchsorted(edges, y, side="right")


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
    Regression targets (floats): ``labels`` sorts by value, ``dirichlet`` spreads
    each of ``REGRESSION_BINS`` quantile bins of the target like a class.
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
    groups = _groups(y)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_parts)]
    for label in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == label))
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


# -- the train/test split --------------------------------------------------------------------
#
# The split every daemon, simulation and baseline scores on is the one scikit-learn's
# ``train_test_split(X, y, test_size=, random_state=seed, stratify=y or None)`` makes;
# it is reproduced here index for index (the same draws from the same legacy
# ``RandomState`` stream), so loading data never imports scikit-learn.
# ``tests/test_data.py`` checks equality against scikit-learn on every bundled set.


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draws near the multivariate hypergeometric mode, ties broken by ``rng``
    (``sklearn.utils.extmath._approximate_mode``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def train_test_indices(y: np.ndarray, test_size: float, seed: int,
                       stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices of ``y``: ``ceil(test_size * n)`` rows for testing, stratified
    by class if asked (every class at least twice, each part at least one row per class:
    the caller checks), as scikit-learn's ``train_test_split`` with ``random_state=seed``."""
    n = len(y)
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if n_train < 1 or n_test < 1:
        raise DataError(f"cannot split {n} examples into train and test at a test share of {test_size}")
    rng = np.random.RandomState(seed)
    if not stratify:
        perm = rng.permutation(n)
        return perm[n_test:], perm[:n_test]
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        perm = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(perm[: n_i[i]])
        test.extend(perm[n_i[i]: n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)

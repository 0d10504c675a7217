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

"""Merge rules: how a node combines a received model with its own.

Pure functions over :class:`ModelState`. ``parse_merge("limited:100")`` turns the
user's spelling into a function ``(local, remote) -> merged``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from gossipd.core.state import ModelState

MergeRule = Callable[[ModelState, ModelState], ModelState]

MERGE_RULES = ("age", "average", "overwrite", "limited:L")


def merge_age(local: ModelState, remote: ModelState) -> ModelState:
    """Age-weighted average: the model that has seen more data counts more.

    ``w = (t_l*w_l + t_r*w_r) / (t_l + t_r)``, age = max. Two untrained models
    (both ages 0) give the plain mean rather than a division by zero.
    """
    total = local.age + remote.age
    if total <= 0.0:
        return merge_average(local, remote)
    a = np.float32(local.age / total)
    params = local.params * a + remote.params * (np.float32(1.0) - a)
    return ModelState.owned(params, max(local.age, remote.age))


def merge_average(local: ModelState, remote: ModelState) -> ModelState:
    """Plain mean of the two parameter vectors; age = max."""
    params = (local.params + remote.params) * np.float32(0.5)
    return ModelState.owned(params, max(local.age, remote.age))


def merge_overwrite(local: ModelState, remote: ModelState) -> ModelState:
    """Take the received model as it is (the 'random walk' baseline)."""
    return remote


def merge_limited(local: ModelState, remote: ModelState, *, limit: float) -> ModelState:
    """Age-weighted, unless the ages differ by more than ``limit``.

    Then the older (more trained) model is kept unchanged, so a fresh model
    cannot drag a well-trained one back towards its random start.
    """
    if abs(local.age - remote.age) > limit:
        return local if local.age >= remote.age else remote
    return merge_age(local, remote)


def parse_merge(spec: str) -> MergeRule:
    """``age`` | ``average`` | ``overwrite`` | ``limited:L`` (L >= 0)."""
    name, _, arg = spec.strip().partition(":")
    simple: dict[str, MergeRule] = {
        "age": merge_age,
        "average": merge_average,
        "overwrite": merge_overwrite,
    }
    if name in simple and not arg:
        return simple[name]
    if name == "limited":
        try:
            limit = float(arg)
        except ValueError:
            raise ValueError(f"merge 'limited:L' needs a number L, got {spec!r}") from None
        if not np.isfinite(limit) or limit < 0:
            raise ValueError(f"merge limit must be finite and >= 0, got {spec!r}")
        return partial(merge_limited, limit=limit)
    raise ValueError(f"unknown merge rule {spec!r}; expected one of {', '.join(MERGE_RULES)}")

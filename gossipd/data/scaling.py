"""The scaling a configuration names: ``network``, ``none`` or ``fixed:PATH`` (a file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gossipd.core.scaling import MAX_STAT_COLUMNS, FeatureStats, Scaling
from gossipd.core.spec import Schema, parse_scaling
from gossipd.data.examples import DataError


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

"""Every node's model, age, scaling statistics and data as arrays, and what
``GossipNode.on_model`` does, for many nodes at once.

The maths is the core's: the robust merge's step and radius
(:func:`~gossipd.core.merge.robust_step`, :func:`~gossipd.core.merge.window_quantile`),
the ``age`` merge (:func:`~gossipd.core.merge.age_weighted`), the statistics merge
(:func:`~gossipd.core.scaling.merge_moments`) and the local pass
(:meth:`~gossipd.core.linear_stack.LinearStackLearner.update_many`, batched
``sgd_step``). Only the bookkeeping around them is here: the same order as the
node (merge the statistics, merge the model, check it, train, check again,
commit or keep the old model and count a discard).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossipd.core import codec as codecs
from gossipd.core.linear_stack import LinearStackLearner
from gossipd.core.local_data import LocalData
from gossipd.core.merge import age_weighted, robust_step, window_quantile
from gossipd.core.node import GossipConfig
from gossipd.core.scaling import capped_count, merge_moments
from gossipd.data import Dataset


@dataclass
class Snapshot:
    """Models as they were sent: one row per message."""

    params: np.ndarray  # (m, n_params) float32
    age: np.ndarray  # (m,)
    count: np.ndarray | None = None  # network scaling: the statistics that travel with the model
    mean: np.ndarray | None = None
    var: np.ndarray | None = None


class NodeModels:
    """All nodes' learning state; row i is node i."""

    def __init__(self, learner: LinearStackLearner, dataset: Dataset, parts: list[np.ndarray],
                 gossip: GossipConfig) -> None:
        n = len(parts)
        self.learner = learner
        self.gossip = gossip
        self.robust = gossip.merge == "robust"
        initial = learner.initial_state()
        self.params = np.repeat(initial.params[None, :], n, axis=0)
        self.age = np.full(n, initial.age, dtype=np.float64)
        counts = np.array([len(p) for p in parts], dtype=np.int64)
        self.counts = counts
        # Each node's examples, padded to the largest share (rows past counts[i] are zeros).
        index = np.concatenate(parts) if n else np.zeros(0, dtype=np.int64)
        pooled = LocalData.for_schema(dataset.X_train[index], dataset.y_train[index], dataset.schema)
        rows = max(int(counts.max(initial=0)), 1)
        owner = np.repeat(np.arange(n), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.arange(len(index)) - np.repeat(starts, counts)
        self.X = np.zeros((n, rows, pooled.X.shape[1]), dtype=np.float32)
        self.T = np.zeros((n, rows, pooled.target.shape[1]), dtype=np.float32)
        self.X[owner, pos] = pooled.X
        self.T[owner, pos] = pooled.target
        self._pooled, self._starts = pooled, starts
        # Network scaling: each node starts from its own data's exact statistics, as a node does.
        self.learned = learner.scaling.learned
        self.count = self.mean = self.var = None
        if self.learned:
            self.count, self.mean, self.var = _initial_stats(pooled.columns(), owner, pos, counts, rows)
        # The robust rule's recent distances (a ring per node) and its age lead.
        self.window = np.full((n, gossip.clip_window), np.nan)
        self.filled = np.zeros(n, dtype=np.int64)
        self.lead = gossip.max_age_lead_passes * np.maximum(counts, 1).astype(np.float64)

    def local_data(self) -> list[LocalData]:
        """Each node's examples as the exact engine holds them (for the baselines)."""
        p = self._pooled
        return [LocalData(p.X[s: s + c], p.y[s: s + c], p.target[s: s + c])
                for s, c in zip(self._starts, self.counts)]

    def snapshot(self, rows: np.ndarray) -> Snapshot:
        """The pushes of ``rows`` as the receivers decode them: under the codec, as ``GossipNode.push``
        round-trips its parameters and statistics."""
        codec = self.gossip.codec
        params = codecs.roundtrip_rows(codec, self.params[rows])
        if not self.learned:
            return Snapshot(params, self.age[rows])
        assert self.count is not None and self.mean is not None and self.var is not None
        mean, var = codecs.roundtrip_stats_rows(codec, self.mean[rows], self.var[rows])
        return Snapshot(params, self.age[rows], self.count[rows], mean, var)

    def deliver(self, rows: np.ndarray, msg: Snapshot, rng: np.random.Generator,
                counters: dict[str, np.ndarray]) -> None:
        """``on_model`` at the nodes ``rows`` (each at most once) for the messages ``msg``."""
        counters["received"][rows] += 1
        count = mean = var = None
        if self.learned:
            assert self.count is not None and self.mean is not None and self.var is not None
            # RobustStatsMerge's count cap (a claim counts at most as much as our own). Its
            # outlier tests and variance floor are not run here: runs with attackers take the
            # exact engine, and honest claims pass them (about 1 in 20,000 dropped; the floor
            # never binds when every share is honest: docs/architecture.md, Robustness).
            own = self.count[rows]
            count, mean, var = merge_moments(own, self.mean[rows], self.var[rows],
                                             capped_count(msg.count, own), msg.mean, msg.var)
        local = self.params[rows]
        a_l = self.age[rows]
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are caught and discarded
            if self.robust:
                merged, age = self._robust(rows, local, a_l, msg)
            else:  # age
                merged = age_weighted(local, msg.params, a_l, msg.age)
                age = np.maximum(a_l, msg.age)
            keep = self._safe(merged)  # else: discarded at the merge
            idx = np.arange(len(rows)) if keep.all() else np.flatnonzero(keep)
            if len(idx) < len(rows):
                merged, age, mean, var = merged[idx], age[idx], _rows(mean, idx), _rows(var, idx)
            sub = rows[idx]
            params, ages, ok = self.learner.update_many(merged, age, self.X[sub], self.T[sub], self.counts[sub],
                                                        rng, mean, var)
            ok &= self._safe(params)  # else: discarded after training (diverged, or too large)
        if not ok.all():
            idx, sub, params, ages = idx[ok], sub[ok], params[ok], ages[ok]
            mean, var = _rows(mean, ok), _rows(var, ok)
        self.params[sub] = params
        self.age[sub] = ages
        if self.learned:
            assert self.count is not None and self.mean is not None and self.var is not None and count is not None
            self.count[sub], self.mean[sub], self.var[sub] = count[idx], mean, var
        counters["merged"][sub] += 1
        if len(sub) < len(rows):
            committed = np.zeros(len(rows), dtype=bool)
            committed[idx] = True
            counters["discarded"][rows[~committed]] += 1

    def _robust(self, rows: np.ndarray, local: np.ndarray, a_l: np.ndarray,
                msg: Snapshot) -> tuple[np.ndarray, np.ndarray]:
        """RobustMerge for each row: the distance joins the node's window, then the step."""
        diff = msg.params.astype(np.float64)
        diff -= local
        dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        width = self.window.shape[1]
        seen = np.isfinite(dist) & (dist > 0.0)
        at = rows if seen.all() else rows[seen]
        self.window[at, self.filled[at] % width] = dist[seen]
        self.filled[at] += 1
        filled = np.minimum(self.filled[rows], width)
        if filled.all():
            ordered = np.sort(self.window[rows], axis=1)  # unfilled slots (nan) sort last
            tau = self.gossip.clip_scale * window_quantile(ordered, filled)
        else:
            tau = np.full(len(rows), np.inf)
            some = filled > 0
            if some.any():
                ordered = np.sort(self.window[rows[some]], axis=1)
                tau[some] = self.gossip.clip_scale * window_quantile(ordered, filled[some])
        w, c, age = robust_step(a_l, msg.age, dist, tau, self.lead[rows])
        diff *= (w * c)[:, None]
        diff += local
        return diff.astype(np.float32), age

    def _safe(self, params: np.ndarray) -> np.ndarray:
        """Per row: finite and within ``max_param_abs`` (``GossipNode._unsafe``'s test)."""
        if params.shape[1] == 0:
            return np.ones(params.shape[0], dtype=bool)
        peak = np.abs(params).max(axis=1)
        return np.isfinite(peak) & (peak <= self.gossip.max_param_abs)

    def scores(self, rows: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric of the models ``rows`` on (X, y), batched and chunked."""
        mean = None if self.mean is None else self.mean[rows]
        var = None if self.var is None else self.var[rows]
        return self.learner.scores_of_arrays(self.params[rows], X, y, mean, var)


def _initial_stats(columns: np.ndarray, owner: np.ndarray, pos: np.ndarray, counts: np.ndarray,
                   rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``FeatureStats.of`` of every node's columns at once, bit for bit: the same float64 sums,
    row by row, over each node's rows padded with zeros (adding 0.0 changes no sum); nodes
    without data get count 0, mean 0, var 1, as ``FeatureStats.of`` gives them."""
    n, k = len(counts), columns.shape[1]
    padded = np.zeros((n, rows, k))
    padded[owner, pos] = columns
    count = counts.astype(np.float64)
    has = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = padded.sum(axis=1) / count[:, None]
        dev = padded - mean[:, None, :]
        dev[np.arange(rows)[None, :] >= counts[:, None]] = 0.0  # padding is not a row
        var = np.multiply(dev, dev).sum(axis=1) / count[:, None]
    mean[~has], var[~has] = 0.0, 1.0
    return count, mean, var


def _rows(a: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if a is None else a[idx]

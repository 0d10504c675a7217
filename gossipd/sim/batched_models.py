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
from gossipd.core.partition import Layout
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
    # A cut model (P > 1): the carried partitions (m, c), increasing, and their ages. ``params``
    # then holds the carried coordinates' values (as decoded) and the sender's others, unused.
    parts: np.ndarray | None = None
    part_ages: np.ndarray | None = None
    with_stats: np.ndarray | None = None  # (m,): the statistics ride along (partition 0 carried)


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
        # A cut model: one age per partition (``age`` is their mean, as ModelState's), and the
        # robust rule's scale per partition (PartScales: a ring of distances per node and partition).
        self.layout = Layout(learner.n_params, gossip.partitions) if gossip.partitions > 1 else None
        if self.layout is not None:
            P = self.layout.count
            self.part_of = np.arange(learner.n_params) % P  # coordinate i is in partition i mod P
            self.part_ages = np.repeat(self.age[:, None], P, axis=1)
            self.ring = np.full((n, P, gossip.clip_window), np.inf)  # inf sorts after every distance
            self.held = np.zeros((n, P), dtype=np.int64)
            self.next = np.zeros((n, P), dtype=np.int64)

    def local_data(self) -> list[LocalData]:
        """Each node's examples as the exact engine holds them (for the baselines)."""
        p = self._pooled
        return [LocalData(p.X[s: s + c], p.y[s: s + c], p.target[s: s + c])
                for s, c in zip(self._starts, self.counts)]

    def snapshot(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> Snapshot:
        """The pushes of ``rows`` as the receivers decode them: under the codec, as ``GossipNode.push``
        round-trips its parameters and statistics; for a cut model, ``carried`` partitions drawn
        uniformly (``rng``), as ``Layout.choose`` draws them, the statistics riding with partition 0."""
        codec = self.gossip.codec
        if self.layout is not None:
            assert rng is not None
            return self._cut_snapshot(rows, rng)
        params = codecs.roundtrip_rows(codec, self.params[rows])
        if not self.learned:
            return Snapshot(params, self.age[rows])
        assert self.count is not None and self.mean is not None and self.var is not None
        mean, var = codecs.roundtrip_stats_rows(codec, self.mean[rows], self.var[rows])
        return Snapshot(params, self.age[rows], self.count[rows], mean, var)

    def _cut_snapshot(self, rows: np.ndarray, rng: np.random.Generator) -> Snapshot:
        assert self.layout is not None
        P, c, codec = self.layout.count, self.gossip.carried, self.gossip.codec
        m = len(rows)
        if c >= P:
            parts = np.broadcast_to(np.arange(P), (m, P)).copy()
        elif c == 1:
            parts = rng.integers(0, P, size=(m, 1))
        else:
            parts = np.sort(np.argsort(rng.random((m, P)), axis=1)[:, :c], axis=1)
        params = self.params[rows]
        if codec == "fp16":  # elementwise: coding the whole row codes the carried values alike
            params = codecs.roundtrip_rows(codec, params)
        elif codec == "int8":  # blocks run over the carried values as they travel, partition after partition
            params = params.copy()
            for index in np.unique(parts, axis=0):
                same = np.flatnonzero((parts == index).all(axis=1))
                coords = self.layout.coordinates(tuple(int(k) for k in index))
                params[same[:, None], coords] = codecs.roundtrip_rows(codec, params[same][:, coords])
        part_ages = np.take_along_axis(self.part_ages[rows], parts, axis=1)
        if not self.learned:
            return Snapshot(params, self.age[rows], parts=parts, part_ages=part_ages)
        assert self.count is not None and self.mean is not None and self.var is not None
        mean, var = codecs.roundtrip_stats_rows(codec, self.mean[rows], self.var[rows])
        return Snapshot(params, self.age[rows], self.count[rows], mean, var, parts, part_ages, parts[:, 0] == 0)

    def deliver(self, rows: np.ndarray, msg: Snapshot, rng: np.random.Generator,
                counters: dict[str, np.ndarray]) -> np.ndarray:
        """``on_model`` at the nodes ``rows`` (each at most once) for the messages ``msg``.
        Returns the positions in ``rows`` whose merge was committed (the useful messages)."""
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
            if msg.with_stats is not None and not msg.with_stats.all():  # a cut model without them
                none = ~msg.with_stats
                count[none], mean[none], var[none] = own[none], self.mean[rows[none]], self.var[rows[none]]
        local = self.params[rows]
        a_l = self.age[rows]
        part_ages = None
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are caught and discarded
            if msg.parts is not None:
                merged, part_ages = self._merge_parts(rows, local, msg)
                age = part_ages.mean(axis=1)
            elif self.robust:
                merged, age = self._robust(rows, local, a_l, msg)
            else:  # age
                merged = age_weighted(local, msg.params, a_l, msg.age)
                age = np.maximum(a_l, msg.age)
            keep = self._safe(merged)  # else: discarded at the merge
            idx = np.arange(len(rows)) if keep.all() else np.flatnonzero(keep)
            if len(idx) < len(rows):
                merged, age, mean, var = merged[idx], age[idx], _rows(mean, idx), _rows(var, idx)
                part_ages = _rows(part_ages, idx)
            sub = rows[idx]
            params, ages, ok = self.learner.update_many(merged, age, self.X[sub], self.T[sub], self.counts[sub],
                                                        rng, mean, var)
            ok &= self._safe(params)  # else: discarded after training (diverged, or too large)
        if not ok.all():
            idx, sub, params = idx[ok], sub[ok], params[ok]
            ages, age, mean, var, part_ages = ages[ok], age[ok], _rows(mean, ok), _rows(var, ok), _rows(part_ages, ok)
        self.params[sub] = params
        self.age[sub] = ages
        if part_ages is not None:  # every partition ages by the examples of the pass (GossipNode._train)
            self.part_ages[sub] = part_ages + (ages - age)[:, None]
        if self.learned:
            assert self.count is not None and self.mean is not None and self.var is not None and count is not None
            self.count[sub], self.mean[sub], self.var[sub] = count[idx], mean, var
        counters["merged"][sub] += 1
        if len(sub) < len(rows):
            committed = np.zeros(len(rows), dtype=bool)
            committed[idx] = True
            counters["discarded"][rows[~committed]] += 1
        return idx

    def _robust(self, rows: np.ndarray, local: np.ndarray, a_l: np.ndarray,
                msg: Snapshot) -> tuple[np.ndarray, np.ndarray]:
        """RobustMerge for each row: the distance joins the node's window, then the step."""
        diff = msg.params.astype(np.float64)
        diff -= local
        dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        w, c, age = robust_step(a_l, msg.age, dist, self._radius(rows, dist), self.lead[rows])
        diff *= (w * c)[:, None]
        diff += local
        return diff.astype(np.float32), age

    def _merge_parts(self, rows: np.ndarray, local: np.ndarray, msg: Snapshot) -> tuple[np.ndarray, np.ndarray]:
        """``merge_parts`` for each row: the carried partitions, each by its own age; the others
        stay as they are. Robust: ``RobustMerge.merge_parts``'s clip per message, in units of the
        carried partitions' own scales (each partition's ring), judged in the node's one window."""
        assert self.layout is not None and msg.parts is not None and msg.part_ages is not None
        m, P = len(rows), self.layout.count
        at = np.arange(m)[:, None]
        carried = np.zeros((m, P), dtype=bool)
        carried[at, msg.parts] = True
        a_l = np.take_along_axis(self.part_ages[rows], msg.parts, axis=1)
        part_ages = self.part_ages[rows].copy()
        if not self.robust:  # age: each carried partition as a whole model of its coordinates
            a = np.ones((m, P), dtype=np.float32)  # the local share: 1 keeps a partition as it is
            total = a_l + msg.part_ages
            with np.errstate(divide="ignore", invalid="ignore"):
                a[at, msg.parts] = np.where(total <= 0.0, 0.5, a_l / np.where(total <= 0.0, 1.0, total))
            share = a[:, self.part_of]
            remote = np.where(carried[:, self.part_of], msg.params, local)
            part_ages[at, msg.parts] = np.maximum(a_l, msg.part_ages)
            return local * share + remote * (np.float32(1.0) - share), part_ages
        diff = msg.params.astype(np.float64)
        diff -= local
        diff *= carried[:, self.part_of]  # only the carried coordinates
        squares = np.zeros((m, P))
        for k in range(P):
            squares[:, k] = np.einsum("ij,ij->i", diff[:, k::P], diff[:, k::P])
        sq = np.take_along_axis(squares, msg.parts, axis=1)
        scale = np.sqrt(self._part_scales(rows, msg.parts, sq).sum(axis=1))
        dist = np.sqrt(sq.sum(axis=1))
        tau = np.full(m, np.inf)
        has = scale > 0.0  # no partition of the message has a scale yet: unclipped, and no ratio joins
        if has.any():
            tau[has] = self._radius(rows[has], dist[has] / scale[has]) * scale[has]
        w, c, merged_ages = robust_step(a_l, msg.part_ages, dist[:, None], tau[:, None], self.lead[rows][:, None])
        step = np.zeros((m, P))
        step[at, msg.parts] = w * c
        diff *= step[:, self.part_of]
        diff += local
        part_ages[at, msg.parts] = merged_ages
        return diff.astype(np.float32), part_ages

    def _part_scales(self, rows: np.ndarray, parts: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """``PartScales.update`` for each row: the squared distances join their partitions' rings
        (finite and nonzero ones), then each carried partition's squared scale, 0 without one."""
        width = self.ring.shape[2]
        node = np.broadcast_to(rows[:, None], parts.shape)
        joins = np.isfinite(squares) & (squares > 0.0)
        n, k = node[joins], parts[joins]
        self.ring[n, k, self.next[n, k]] = np.sqrt(squares[joins])
        self.next[n, k] = (self.next[n, k] + 1) % width
        self.held[n, k] = np.minimum(self.held[n, k] + 1, width)
        held = self.held[node, parts]
        out = np.zeros(parts.shape)
        some = held > 0
        if some.any():
            ordered = np.sort(self.ring[node[some], parts[some]], axis=1)
            out[some] = np.square(window_quantile(ordered, held[some]))
        return out

    def _radius(self, rows: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """``RobustMerge._distance`` for each row: ``dist`` joins the node's window (finite and
        nonzero ones), then ``clip_scale`` times the first quartile of it (inf while it is empty)."""
        width = self.window.shape[1]
        seen = np.isfinite(dist) & (dist > 0.0)
        at = rows if seen.all() else rows[seen]
        self.window[at, self.filled[at] % width] = dist[seen]
        self.filled[at] += 1
        filled = np.minimum(self.filled[rows], width)
        if filled.all():
            return self.gossip.clip_scale * window_quantile(np.sort(self.window[rows], axis=1), filled)
        tau = np.full(len(rows), np.inf)
        some = filled > 0
        if some.any():
            ordered = np.sort(self.window[rows[some]], axis=1)  # unfilled slots (nan) sort last
            tau[some] = self.gossip.clip_scale * window_quantile(ordered, filled[some])
        return tau

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

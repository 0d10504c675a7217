"""Merge rules: how a node combines a received model with its own.

``parse_merge("limited:100")`` turns the user's spelling into a function
``(local, remote) -> merged`` over :class:`ModelState`. All rules but one are
pure functions; ``robust`` (the default) is a small object that remembers the
distances of the models it was recently sent, to scale its clipping radius, so
every node needs its own instance (``parse_merge`` returns a fresh one).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from gossipd.core.messages import Parts
from gossipd.core.partition import Layout
from gossipd.core.state import ModelState

MergeRule = Callable[[ModelState, ModelState], ModelState]

MERGE_RULES = ("robust", "age", "average", "overwrite", "limited:L")

# Defaults of the robust rule's knobs (GossipConfig carries them to the node,
# with the age lead scaled to the node's data).
MAX_AGE_LEAD = 300.0
CLIP_SCALE = 1.5
CLIP_WINDOW = 16
# The radius is a low quantile of recent distances, not the median: the median
# flips to the attackers' scale as soon as they happen to fill half of a
# node's window (20% attackers do, now and then, over a 16-message window),
# the first quartile only when they fill three quarters.
CLIP_QUANTILE = 0.25


class RobustMerge:
    """Age-weighted averaging that no single message can take over (the default).

    After ClippedGossip (He, Karimireddy and Jaggi, "Byzantine-Robust
    Decentralized Learning via ClippedGossip", 2022): ``x <- x + w * c * (x_r - x)``
    where ``c`` shrinks the step of a model that is far from what this node
    usually hears. Three bounds on what one message can do:

    * **Claimed age is capped.** A remote age above ``local.age + max_age_lead``
      counts as that; then ``w = a_r / (a_l + a_r)`` as in ``age`` (0.5 when
      both are 0). A message claiming 1e300 weighs what a peer slightly ahead
      of us would.
    * **Far models barely move us.** ``tau = clip_scale * Q1(last clip_window
      distances)`` (first quartile; the current distance included). Within
      ``tau`` the step is ``age``'s (``c = 1``); beyond it ``c = (tau / d)^2``,
      so the step ``w * tau^2 / d`` is largest at ``d = tau`` and shrinks the
      farther out the model is (a redescending influence, as in robust
      M-estimators). Plain clipping (``c = tau / d``, a step of ``w * tau``
      whatever ``d``) was not enough in pairwise gossip, where one message
      carries half the weight: at 20% sign-flip or zero attackers the
      constant pull towards the origin outran training (measurements in
      ``docs/architecture.md``). Distances of exactly 0 carry no scale and are
      skipped; the first model a fresh node hears is taken as ``age`` would.
    * **Age follows the step.** The merged age is ``a_l + c * max(0, a_r - a_l)``
      with the (capped) ``a_r``: unclipped, that is ``age``'s max; a far model
      lends only the share of its age that we took of its parameters. So a
      claimed huge age does not spread either: it adds at most
      ``max_age_lead`` per message, and far less when the parameters are off.

    Inputs are never modified; arithmetic runs in float64, so two float32
    extremes give a large but exact difference rather than an overflow (the
    node discards a result that is out of bounds).
    """

    __slots__ = ("max_age_lead", "clip_scale", "_distances", "_scales", "last_clip")

    def __init__(self, max_age_lead: float = MAX_AGE_LEAD, clip_scale: float = CLIP_SCALE,
                 clip_window: int = CLIP_WINDOW) -> None:
        check_robust_knobs(max_age_lead, clip_scale, clip_window)
        self.max_age_lead = float(max_age_lead)
        self.clip_scale = float(clip_scale)
        self._distances: deque[float] = deque(maxlen=clip_window)
        self._scales: PartScales | None = None  # a cut model's partition scales (merge_parts)
        self.last_clip = 1.0  # share of the last step taken (1 = not clipped); for tests and tracing

    def radius(self) -> float:
        """The current radius tau (inf until a distance has been seen)."""
        if not self._distances:
            return math.inf
        ordered = np.sort(np.fromiter(self._distances, np.float64, len(self._distances)))
        return self.clip_scale * float(window_quantile(ordered, len(ordered)))

    def __call__(self, local: ModelState, remote: ModelState) -> ModelState:
        a_l = local.age
        diff = remote.params.astype(np.float64)
        diff -= local.params
        dist = math.sqrt(float(np.dot(diff, diff)))
        w, c, age = robust_step(a_l, remote.age, dist, self._distance(dist), self.max_age_lead)
        self.last_clip = c
        diff *= w * c
        diff += local.params
        with np.errstate(over="ignore", invalid="ignore"):
            params = diff.astype(np.float32)
        return ModelState.owned(params, age)

    def _distance(self, dist: float) -> float:
        """The radius tau a model at distance ``dist`` is clipped by; ``dist`` joins the history first."""
        if math.isfinite(dist) and dist > 0.0:
            self._distances.append(dist)
        return self.radius()

    def merge_parts(self, local: ModelState, values: np.ndarray, parts: Parts, layout: Layout) -> ModelState:
        """The robust rule on the carried partitions of a cut model, each by its own age.

        Per partition ``k``: its claimed age is capped at ``ages[k] + max_age_lead``,
        weighted ``w_k = a_r / (a_l + a_r)``, and its age follows the step, as for a
        whole model (``robust_step`` on arrays). The clip is per message, in units of
        each partition's own scale: ``s_k``, the first quartile of partition ``k``'s
        last ``clip_window`` distances (:class:`PartScales`), since partitions differ in
        scale and one distance extrapolated to the whole model clipped a third of
        honest messages (docs/architecture.md). The message's distance relative to
        its partitions' scales, ``r = |x_r - x|_S / sqrt(sum s_k^2)``, joins the
        node's one window and is clipped by ``tau = clip_scale * Q1`` of it, as a
        whole model's distance is: one entry per message however many partitions
        it carries, and fresh with every message. A message carrying partitions
        ``S`` so moves the model at most ``max w * tau * sqrt(sum over S of s_k^2)``,
        within what a whole-model message could. ``local`` must be cut into
        ``layout.count`` partitions; the others are left as they are.
        """
        assert local.ages is not None
        idx = list(parts.index)
        a_l = local.ages[idx]
        coords = layout.coordinates(idx)
        x_l = local.params[coords].astype(np.float64)
        diff = values.astype(np.float64)
        diff -= x_l
        # Squared distance per carried partition: each one's run of values summed.
        starts = np.concatenate(([0], np.cumsum(layout.sizes[idx])[:-1]))
        squares = np.add.reduceat(diff * diff, starts)
        if self._scales is None or self._scales.count != layout.count:
            self._scales = PartScales(layout.count, self._distances.maxlen or CLIP_WINDOW)
        scale = math.sqrt(float(np.sum(self._scales.update(idx, squares))))
        dist = math.sqrt(float(np.sum(squares)))
        if scale > 0.0:  # numpy scalars: the array form of robust_step divides by the distance, which may be 0
            tau = np.float64(self._distance(dist / scale) * scale)
        else:  # no partition of the message has a scale yet (the first nonzero distances)
            tau = np.float64(math.inf)
        w, c, merged_ages = robust_step(a_l, np.asarray(parts.ages, dtype=np.float64), np.float64(dist), tau,
                                        self.max_age_lead)
        self.last_clip = float(np.max(c))
        diff *= layout.expand(w * c, parts.index)
        diff += x_l
        params = local.params.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            params[coords] = diff.astype(np.float32)
        ages = local.ages.copy()
        ages[idx] = merged_ages
        return ModelState.owned(params, 0.0, ages)


class PartScales:
    """Each partition's scale for :meth:`RobustMerge.merge_parts`: the first quartile of
    its last ``size`` nonzero distances (as for the radius, liars must fill three quarters
    of a ring to move it), kept in ``count`` rings of float64 (16 KB a node at the most
    partitions)."""

    __slots__ = ("count", "_ring", "_held", "_next")

    def __init__(self, count: int, size: int) -> None:
        self.count = count
        self._ring = np.full((count, size), np.inf)  # inf sorts after every held distance
        self._held = np.zeros(count, np.intp)
        self._next = np.zeros(count, np.intp)

    def update(self, parts: list[int], squares: np.ndarray) -> np.ndarray:
        """The squared scales of ``parts`` once their squared distances ``squares`` have
        joined their rings (0 for a partition that has none yet); 0 and non-finite
        distances do not join."""
        size = self._ring.shape[1]
        for k, sq in zip(parts, squares.tolist()):
            if math.isfinite(sq) and sq > 0.0:
                self._ring[k, self._next[k]] = math.sqrt(sq)
                self._next[k] = (self._next[k] + 1) % size
                self._held[k] = min(self._held[k] + 1, size)
        held = self._held[parts]
        out = np.zeros(len(parts))
        some = held > 0
        if some.any():
            rows = np.asarray(parts)[some]
            out[some] = np.square(window_quantile(np.sort(self._ring[rows], axis=1), held[some]))
        return out


def merge_parts(rule: MergeRule, local: ModelState, values: np.ndarray, parts: Parts, layout: Layout) -> ModelState:
    """Merge the carried partitions (``values``, partition after partition) into ``local``, each
    by its own age under ``rule``; partitions the message does not carry stay as they are.

    ``local`` must be cut into ``layout.count`` partitions (``ModelState.ages``).
    ``robust`` clips per message (:meth:`RobustMerge.merge_parts`); the other rules
    are applied to each carried partition as to a whole model of its coordinates.
    """
    if isinstance(rule, RobustMerge):
        return rule.merge_parts(local, values, parts, layout)
    assert local.ages is not None
    params = local.params.copy()
    ages = local.ages.copy()
    offset = 0
    for k, a_r in zip(parts.index, parts.ages):
        coords = layout.coordinates((k,))
        m = coords.shape[0]
        merged = rule(ModelState.owned(local.params[coords], float(ages[k])),
                      ModelState.owned(np.array(values[offset:offset + m], dtype=np.float32), a_r))
        params[coords] = merged.params
        ages[k] = merged.age
        offset += m
    return ModelState.owned(params, 0.0, ages)


# The robust rule's arithmetic, as functions of plain numbers or of arrays (one entry
# per node): RobustMerge calls them for one node, the batched simulator
# (gossipd/sim/batched_models.py) for many nodes at once, so both engines merge by
# the same formulas.


def robust_step(a_l: Any, a_r: Any, dist: Any, tau: Any, max_age_lead: Any) -> tuple[Any, Any, Any]:
    """``(w, c, merged age)`` of the robust merge of a model of claimed age ``a_r``
    at distance ``dist`` into ours of age ``a_l``, given the radius ``tau``:
    ``a_r`` capped at ``a_l + max_age_lead``, ``w = a_r / (a_l + a_r)`` (0.5 when
    both are 0), ``c = 1`` within ``tau`` else ``(tau / dist)^2``, age
    ``a_l + c * max(0, a_r - a_l)``. Floats in, floats out; arrays in, arrays out.
    A nan distance (a non-finite remote) makes ``c`` nan and so the result
    non-finite: the node discards it and counts it, rather than the merge hiding it."""
    if np.ndim(a_l) == 0 and np.ndim(dist) == 0 and np.ndim(tau) == 0:  # one node: plain floats
        a_r = min(a_r, a_l + max_age_lead)
        total = a_l + a_r
        w = 0.5 if total <= 0.0 else a_r / total
        c = 1.0 if dist <= tau else (tau / dist) ** 2
        return w, c, a_l + c * max(0.0, a_r - a_l)
    a_r = np.minimum(a_r, a_l + max_age_lead)
    total = a_l + a_r
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(total <= 0.0, 0.5, a_r / np.maximum(total, np.finfo(np.float64).tiny))
        c = np.where(dist <= tau, 1.0, np.square(tau / dist))
    return w, c, a_l + c * np.maximum(0.0, a_r - a_l)


def window_quantile(ordered: np.ndarray, count: Any, q: float = CLIP_QUANTILE) -> Any:
    """The ``q``-quantile of the first ``count`` values of ``ordered`` (sorted ascending
    along its last axis), as ``numpy.quantile``'s default (linear) method computes it,
    bit for bit; row-wise for a 2-D ``ordered`` and an array of counts (each >= 1)."""
    count = np.asarray(count)
    virtual = (count - 1) * q
    lo = np.floor(virtual).astype(np.intp)
    gamma = virtual - lo
    hi = np.minimum(lo + 1, count - 1)
    if ordered.ndim == 1:
        a, b = ordered[lo], ordered[hi]
    else:
        at = np.arange(ordered.shape[0])
        a, b = ordered[at, lo], ordered[at, hi]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def check_robust_knobs(max_age_lead: float, clip_scale: float, clip_window: int) -> None:
    """ValueError naming the first bad knob of the robust rule."""
    if not (math.isfinite(max_age_lead) and max_age_lead >= 0):
        raise ValueError(f"max_age_lead must be finite and >= 0, got {max_age_lead!r}")
    if not (math.isfinite(clip_scale) and clip_scale > 0):
        raise ValueError(f"clip_scale must be finite and > 0, got {clip_scale!r}")
    if isinstance(clip_window, bool) or not isinstance(clip_window, int) or clip_window < 1:
        raise ValueError(f"clip_window must be an integer >= 1, got {clip_window!r}")


def merge_age(local: ModelState, remote: ModelState) -> ModelState:
    """Age-weighted average: the model that has seen more data counts more.

    ``w = (t_l*w_l + t_r*w_r) / (t_l + t_r)``, age = max. Two untrained models
    (both ages 0) give the plain mean rather than a division by zero.
    """
    total = local.age + remote.age
    if total <= 0.0:
        return merge_average(local, remote)
    return ModelState.owned(age_weighted(local.params, remote.params, local.age, remote.age),
                            max(local.age, remote.age))


def age_weighted(local: np.ndarray, remote: np.ndarray, a_l: Any, a_r: Any) -> np.ndarray:
    """``merge_age``'s parameters: ``local * a + remote * (1 - a)`` in float32 with
    ``a = a_l / (a_l + a_r)`` (0.5 when both ages are 0). One model (1-D, float ages) or
    one per row (``(m, n)`` parameters, ages ``(m,)``): the batched simulator's ``age``."""
    if np.ndim(a_l) == 0:
        total = a_l + a_r
        a: Any = np.float32(0.5 if total <= 0.0 else a_l / total)
    else:
        total = a_l + a_r
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(total <= 0.0, 0.5, a_l / np.where(total <= 0.0, 1.0, total)).astype(np.float32)[:, None]
    return local * a + remote * (np.float32(1.0) - a)


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


def parse_merge(spec: str, *, max_age_lead: float = MAX_AGE_LEAD, clip_scale: float = CLIP_SCALE,
                clip_window: int = CLIP_WINDOW) -> MergeRule:
    """``robust`` | ``age`` | ``average`` | ``overwrite`` | ``limited:L`` (L >= 0).

    The keyword knobs only concern ``robust`` (see :class:`RobustMerge`); each
    call returns a new ``RobustMerge``, since it keeps per-node history.
    """
    name, _, arg = spec.strip().partition(":")
    if name == "robust" and not arg:
        return RobustMerge(max_age_lead, clip_scale, clip_window)
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

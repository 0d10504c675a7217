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

import numpy as np

from gossipd.core.scaling import FeatureStats
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
# Scaling statistics: how many times the sampling noise between two honest
# estimates their distance may be before it counts as far. Generous, because
# label-skewed shares differ in their features for real: 4 cost label-skewed
# digits 30 points, 16 cost 2-3, 64 nothing (and still keeps 20% liars
# claiming count 1e300 and shifted means to within a point).
STATS_SLACK = 64.0


class ClipRadius:
    """How far is far, for the robust rules: ``tau = clip_scale * Q1`` of the last
    ``clip_window`` distances seen (the current one included), and the share
    ``c`` of a step to take at distance ``d``: 1 within ``tau``, ``(tau / d)^2``
    beyond it. Distances of exactly 0 carry no scale and are not recorded;
    with no distance recorded yet, nothing is clipped."""

    __slots__ = ("clip_scale", "_distances", "last_clip")

    def __init__(self, clip_scale: float, clip_window: int) -> None:
        self.clip_scale = float(clip_scale)
        self._distances: deque[float] = deque(maxlen=clip_window)
        self.last_clip = 1.0  # share of the last step taken (1 = not clipped); for tests and tracing

    def radius(self) -> float:
        """The current radius tau (inf until a distance has been seen)."""
        if not self._distances:
            return math.inf
        return self.clip_scale * float(np.quantile(self._distances, CLIP_QUANTILE))

    def share(self, dist: float) -> float:
        """Record ``dist`` and return the share of the step to take. A nan
        distance (a non-finite remote) gives nan: the caller's result is then
        non-finite and discarded, rather than the rule hiding it."""
        if math.isfinite(dist) and dist > 0.0:
            self._distances.append(dist)
        tau = self.radius()
        c = 1.0 if dist <= tau else (tau / dist) ** 2
        self.last_clip = c
        return c


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

    __slots__ = ("max_age_lead", "clip")

    def __init__(self, max_age_lead: float = MAX_AGE_LEAD, clip_scale: float = CLIP_SCALE,
                 clip_window: int = CLIP_WINDOW) -> None:
        check_robust_knobs(max_age_lead, clip_scale, clip_window)
        self.max_age_lead = float(max_age_lead)
        self.clip = ClipRadius(clip_scale, clip_window)

    def radius(self) -> float:
        return self.clip.radius()

    @property
    def last_clip(self) -> float:
        return self.clip.last_clip

    def __call__(self, local: ModelState, remote: ModelState) -> ModelState:
        a_l = local.age
        a_r = min(remote.age, a_l + self.max_age_lead)
        total = a_l + a_r
        w = 0.5 if total <= 0.0 else a_r / total
        diff = remote.params.astype(np.float64)
        diff -= local.params
        c = self.clip.share(math.sqrt(float(np.dot(diff, diff))))
        diff *= w * c
        diff += local.params
        with np.errstate(over="ignore", invalid="ignore"):
            params = diff.astype(np.float32)
        return ModelState.owned(params, a_l + c * max(0.0, a_r - a_l))


class RobustStatsMerge:
    """``FeatureStats.merge`` (count-weighted, count = max) with bounds, for the
    feature-scaling statistics that travel with models under network scaling.
    Without them a message claiming to summarise 1e300 examples replaces every
    node's scaling, as a claimed age did the model (20% such liars: honest
    accuracy 0.15 on digits).

    * The claimed count is capped at ``local.count + max_count_lead``. Counts
      do not grow with training as ages do (honest ones converge to the
      largest share), so the lead is small: one pass of local data.
    * Statistics that differ more than sampling noise explains move us little.
      The distance is the two estimates' difference in units of our spread,
      ``d^2 = sum(((mean_r - mean_l) / std_l)^2) + sum(log(std_r / std_l)^2)``;
      for two samples of one distribution each term is about ``1/n_l + 1/n_r``,
      so ``tau^2 = STATS_SLACK * clip_scale^2 * k * (1/n_l + 1/n_r)`` over
      ``k`` columns (generous, so honest skew between shares still mixes), and
      beyond it the remote estimate is first pulled towards ours by the share
      ``(tau / d)^2``, as the step is in :class:`RobustMerge` (mean linearly,
      variance geometrically).
      The radius needs no history: a node's own data is a prior from the
      first message on, where the model's radius has nothing to go by.
    * The count follows the step, as the age does in :class:`RobustMerge`.

    Unclipped and within the lead it is ``FeatureStats.merge``. Raises
    ValueError if the result is not finite (the node discards it).
    """

    __slots__ = ("max_count_lead", "clip_scale", "last_clip")

    def __init__(self, max_count_lead: float, clip_scale: float = CLIP_SCALE) -> None:
        check_robust_knobs(max_count_lead, clip_scale, 1)
        self.max_count_lead = float(max_count_lead)
        self.clip_scale = float(clip_scale)
        self.last_clip = 1.0

    def __call__(self, local: FeatureStats, remote: FeatureStats) -> FeatureStats:
        if remote.size != local.size:
            raise ValueError(f"stats of {remote.size} columns cannot merge into {local.size}")
        n_l = local.count
        n_r = min(remote.count, n_l + self.max_count_lead)
        total = n_l + n_r
        b = 0.5 if total <= 0.0 else n_r / total
        delta = remote.mean - local.mean
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            z = delta / local.std
            spread = np.log(remote.std / local.std)
            d2 = float(np.dot(z, z) + np.dot(spread, spread))
            noise = local.size * (1.0 / max(n_l, 1.0) + 1.0 / max(n_r, 1.0))  # E[d^2] of two honest samples
            tau2 = STATS_SLACK * self.clip_scale * self.clip_scale * noise
            c = 1.0 if d2 <= tau2 else tau2 / d2  # (tau / d)^2
            self.last_clip = c
            # Pull the remote estimate towards ours by the share c (mean linearly,
            # variance geometrically), then merge as FeatureStats.merge does. Clipping
            # only the weight would leave the mixture term b * delta^2 as large as
            # the liar likes: a tiny weight times an enormous shift.
            delta *= c
            remote_var = remote.var if c == 1.0 else local.var ** (1.0 - c) * remote.var ** c
            a = 1.0 - b
            mean = local.mean + b * delta
            var = a * local.var + b * remote_var + (a * b) * delta * delta
        return FeatureStats(n_l + c * max(0.0, n_r - n_l), mean, var)


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

"""Attackers for the simulator: members that lie about their model.

An attacker is an ordinary :class:`GossipNode` (it receives, merges, trains,
shuffles and answers like everyone else, so it stays in the overlay) whose
every push carries a corrupted model. The engine does not know the difference;
only the measurements leave attackers out.

``--attackers FRACTION:KIND``, KIND one of:

=============== =============================================================
``age``         claims age 1e300 with random parameters (N(0, 1) each, drawn
                afresh per push): the takeover the ``age`` merge falls for
``age:zero``    claims age 1e300 with all-zero parameters
``scale:S``     sends its model times S (its true age)
``signflip``    sends minus its model (its true age)
``noise:SIGMA`` adds N(0, SIGMA²) to every parameter (its true age)
``zero``        sends all-zero parameters (its true age)
``stats``       an honest model with lying feature-scaling statistics (count
                1e300, mean 100, variance 1e-4 in every column); only under
                ``--scaling network``, where statistics travel with models
=============== =============================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from gossipd.core.messages import ModelMessage, Send
from gossipd.core.node import GossipNode
from gossipd.core.scaling import FeatureStats

ATTACK_KINDS = ("age", "age:zero", "scale:S", "signflip", "noise:SIGMA", "zero", "stats")
CLAIMED_AGE = 1e300  # finite, so it passes every wire check, and larger than any honest age


class Attack(Protocol):
    def corrupt(self, msg: ModelMessage, rng: np.random.Generator) -> ModelMessage:
        """The message actually sent instead of ``msg``."""


@dataclass(frozen=True)
class ClaimAge:
    """Huge age, worthless parameters: random ones, or zeros."""

    zero: bool = False

    def corrupt(self, msg: ModelMessage, rng: np.random.Generator) -> ModelMessage:
        n = msg.params.shape[0]
        params = np.zeros(n, np.float32) if self.zero else rng.standard_normal(n, dtype=np.float32)
        parts = replace(msg.parts, ages=(CLAIMED_AGE,) * len(msg.parts.index)) if msg.parts is not None else None
        return replace(msg, age=CLAIMED_AGE, params=params, parts=parts)


@dataclass(frozen=True)
class Scale:
    """The attacker's own model times ``factor`` (-1 is the sign flip, 0 the zero model)."""

    factor: float

    def corrupt(self, msg: ModelMessage, rng: np.random.Generator) -> ModelMessage:
        return replace(msg, params=msg.params * np.float32(self.factor))


@dataclass(frozen=True)
class Noise:
    """The attacker's own model plus Gaussian noise of standard deviation ``sigma``."""

    sigma: float

    def corrupt(self, msg: ModelMessage, rng: np.random.Generator) -> ModelMessage:
        noise = rng.standard_normal(msg.params.shape[0], dtype=np.float32) * np.float32(self.sigma)
        return replace(msg, params=msg.params + noise)


@dataclass(frozen=True)
class LieAboutScaling:
    """The attacker's own model, with feature statistics that claim to summarise
    everything and shift every feature by 100 standard deviations."""

    def corrupt(self, msg: ModelMessage, rng: np.random.Generator) -> ModelMessage:
        if msg.stats is None:  # no network-learned scaling: nothing to lie about
            return msg
        n = msg.stats.mean.shape[0]
        return replace(msg, stats=FeatureStats(CLAIMED_AGE, np.full(n, 100.0), np.full(n, 1e-4)))


@dataclass(frozen=True)
class AttackSpec:
    """A parsed ``--attackers`` value."""

    fraction: float
    kind: str  # as written after the fraction, e.g. "scale:10"
    attack: Attack

    def count(self, nodes: int) -> int:
        """How many of ``nodes`` attack (at least one, never all)."""
        return min(nodes - 1, max(1, round(self.fraction * nodes)))

    def choose(self, nodes: int, rng: np.random.Generator) -> np.ndarray:
        """A boolean mask of the attackers, drawn from ``rng``."""
        mask = np.zeros(nodes, dtype=bool)
        mask[rng.choice(nodes, size=self.count(nodes), replace=False)] = True
        return mask


def parse_attackers(spec: str) -> AttackSpec:
    """``FRACTION:KIND`` (0 < FRACTION < 1), KIND from :data:`ATTACK_KINDS`; ValueError otherwise."""
    frac_s, _, kind = spec.strip().partition(":")
    try:
        fraction = float(frac_s)
    except ValueError:
        raise ValueError(f"expected FRACTION:KIND (e.g. 0.2:signflip), got {spec!r}") from None
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the attacker fraction must be in (0, 1), got {spec!r}")
    return AttackSpec(fraction, kind, _parse_kind(kind))


def _parse_kind(kind: str) -> Attack:
    name, _, arg = kind.partition(":")
    fixed: dict[str, Attack] = {"signflip": Scale(-1.0), "zero": Scale(0.0), "age": ClaimAge(),
                                "stats": LieAboutScaling()}
    if name in fixed and not arg:
        return fixed[name]
    if kind == "age:zero":
        return ClaimAge(zero=True)
    if name in ("scale", "noise"):
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"attack '{name}' needs a number, got {kind!r}") from None
        if not math.isfinite(value) or (name == "noise" and value <= 0):
            raise ValueError(f"attack {kind!r}: the number must be finite{' and > 0' if name == 'noise' else ''}")
        return Scale(value) if name == "scale" else Noise(value)
    raise ValueError(f"unknown attack {kind!r}; expected one of {', '.join(ATTACK_KINDS)}")


@dataclass
class AttackingNode(GossipNode):
    """A node that behaves in every way but one: what it pushes is ``attack``'s."""

    attack: Attack | None = None
    attack_rng: np.random.Generator | None = None

    def push(self) -> Send | None:
        send = super().push()
        if send is None:
            return None
        assert self.attack is not None and self.attack_rng is not None
        assert isinstance(send.message, ModelMessage)
        return Send(send.peer, self.attack.corrupt(send.message, self.attack_rng))

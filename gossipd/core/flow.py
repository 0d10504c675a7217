"""Flow control: when a node pushes. Plain push, or a token account. Pure, no clock.

``push`` (the default): one push every period Δ, nothing else.

``tokens:A,C``: the **randomized token account** of Danner and Jelasity
("Token account algorithms: the best of the proactive and reactive worlds",
ICDCS 2018), with reactivity ``A`` and capacity ``C`` (1 <= A <= C). A node
holds a balance ``a`` of tokens. Every period it pushes proactively with
probability ``PROACTIVE(a)``, else it earns a token:

    PROACTIVE(a) = 0                      if a < A - 1
                 = (a - A + 1) / (C - A + 1)  if A - 1 <= a <= C
                 = 1                      if a > C

and every model it receives and merges (a *useful* message: one refused or
discarded is not) it forwards at once to ``randRound(a / A)`` random peers,
spending that many tokens (``randRound(x)`` is ``floor(x)`` plus one with
probability ``x - floor(x)``). A token is earned only in a period without a
proactive push, and each reactive push spends one, so a node sends at most
one message per period on average, as plain push does, plus its initial
balance; but a fresh model now travels on at once instead of waiting up to Δ
at each hop. The balance stays below about ``C + 1`` (at ``C`` every period
pushes).

The policy is an object per node (it holds the balance); the node asks it in
``on_tick`` (proactive) and in ``react`` (reactive). Drivers call both from
one thread (the daemon's event loop), so the balance needs no lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["FLOWS", "Flow", "PlainPush", "RandomizedTokenAccount", "parse_flow", "proactive_probability"]

FLOWS = ("push", "tokens:A,C")


class Flow(Protocol):
    def proactive(self, rng: np.random.Generator) -> bool:
        """A period has passed: push now (True), or keep the opportunity (False)."""

    def reactive(self, rng: np.random.Generator) -> int:
        """A useful model arrived: how many pushes to send at once."""

    @property
    def balance(self) -> float:
        """Tokens held (0 for plain push)."""


class PlainPush:
    """One push per period, never a reaction; draws nothing from the generator."""

    balance = 0.0

    def proactive(self, rng: np.random.Generator) -> bool:
        return True

    def reactive(self, rng: np.random.Generator) -> int:
        return 0


@dataclass
class RandomizedTokenAccount:
    """Danner and Jelasity's randomized variant: reactivity ``A``, capacity ``C``, balance ``tokens``."""

    reactivity: int
    capacity: int
    tokens: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.reactivity <= self.capacity:
            raise ValueError(f"token account needs 1 <= A <= C, got A={self.reactivity}, C={self.capacity}")

    @property
    def balance(self) -> float:
        return float(self.tokens)

    def proactive_probability(self) -> float:
        return float(proactive_probability(self.tokens, self.reactivity, self.capacity))

    def proactive(self, rng: np.random.Generator) -> bool:
        p = self.proactive_probability()
        if p >= 1.0 or (p > 0.0 and rng.random() < p):
            return True
        self.tokens += 1
        return False

    def reactive(self, rng: np.random.Generator) -> int:
        x = self.tokens / self.reactivity
        sends = math.floor(x)
        if rng.random() < x - sends:
            sends += 1
        sends = min(sends, self.tokens)
        self.tokens -= sends
        return sends


def proactive_probability(tokens: Any, reactivity: int, capacity: int) -> Any:
    """``PROACTIVE(a)`` of the module doc for a balance ``tokens``: a number, or an array of
    balances (the batched simulator's nodes) giving an array."""
    a = np.asarray(tokens, dtype=np.float64)
    p = np.clip((a - reactivity + 1) / (capacity - reactivity + 1), 0.0, 1.0)
    return p if p.ndim else float(p)


def parse_flow(spec: str) -> Flow:
    """``push`` | ``tokens:A,C`` (integers, 1 <= A <= C) -> a fresh policy (one per node)."""
    name, _, arg = spec.strip().partition(":")
    if name == "push" and not arg:
        return PlainPush()
    if name == "tokens":
        try:
            a_s, c_s = arg.split(",")
            reactivity, capacity = int(a_s), int(c_s)
        except ValueError:
            raise ValueError(f"flow 'tokens:A,C' needs two integers, got {spec!r}") from None
        return RandomizedTokenAccount(reactivity, capacity)
    raise ValueError(f"unknown flow {spec!r}; expected one of {', '.join(FLOWS)}")

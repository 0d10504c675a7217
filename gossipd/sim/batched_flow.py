"""Every node's token account as arrays: ``core/flow.py``'s randomized token account
(Danner and Jelasity, ICDCS 2018) for many nodes at once, for the batched engine.

The same rules as :class:`~gossipd.core.flow.RandomizedTokenAccount`, node by node: a due
timer pushes with probability ``PROACTIVE(a)`` (the core's
:func:`~gossipd.core.flow.proactive_probability`), else earns a token; a useful merge
forwards ``randRound(a / A)`` pushes (at most ``a``), spending them. Plain push has no
accounts (:meth:`TokenAccounts.of` gives None) and the engine pushes on every timer.
"""

from __future__ import annotations

import numpy as np

from gossipd.core.flow import RandomizedTokenAccount, parse_flow, proactive_probability

__all__ = ["TokenAccounts"]


class TokenAccounts:
    """Balances of ``n`` nodes (all start at 0, as a node's account does)."""

    def __init__(self, n: int, reactivity: int, capacity: int) -> None:
        self.reactivity, self.capacity = reactivity, capacity
        self.tokens = np.zeros(n, dtype=np.int64)

    @classmethod
    def of(cls, spec: str, n: int) -> TokenAccounts | None:
        """The accounts a ``--flow`` spec gives, or None for plain push."""
        policy = parse_flow(spec)
        if isinstance(policy, RandomizedTokenAccount):
            return cls(n, policy.reactivity, policy.capacity)
        return None

    def proactive(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Which of ``rows`` (distinct) push now; the others earn a token."""
        p = proactive_probability(self.tokens[rows], self.reactivity, self.capacity)
        go = rng.random(len(rows)) < p  # p = 1 always pushes, p = 0 never
        self.tokens[rows[~go]] += 1
        return go

    def reactive(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """How many pushes each of ``rows`` (distinct) forwards, those tokens spent."""
        a = self.tokens[rows]
        x = a / self.reactivity
        sends = np.floor(x).astype(np.int64)
        sends += rng.random(len(rows)) < x - sends
        sends = np.minimum(sends, a)
        self.tokens[rows] -= sends
        return sends

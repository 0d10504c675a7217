"""Token accounts (Danner and Jelasity, ICDCS 2018): the randomized variant's functions and its rate."""

from __future__ import annotations

import numpy as np
import pytest

from gossipd.core.flow import PlainPush, RandomizedTokenAccount, parse_flow


def test_proactive_probability_is_the_papers_ramp() -> None:
    acct = RandomizedTokenAccount(reactivity=4, capacity=10)
    ramp = []
    for a in range(13):
        acct.tokens = a
        ramp.append(acct.proactive_probability())
    # 0 below A - 1 = 3, (a - A + 1) / (C - A + 1) up to C, 1 beyond.
    assert ramp[:3] == [0.0] * 3
    assert ramp[3:11] == pytest.approx([(a - 3) / 7 for a in range(3, 11)])
    assert ramp[11:] == [1.0, 1.0]


def test_a_period_without_a_push_earns_a_token_and_reactions_spend_them() -> None:
    rng = np.random.default_rng(0)
    acct = RandomizedTokenAccount(reactivity=2, capacity=4)
    assert not acct.proactive(rng) and acct.tokens == 1  # below A - 1: never proactive
    acct.tokens = 5
    assert acct.proactive(rng) and acct.tokens == 5  # above C: always, and no token earned
    acct.tokens = 4
    sends = [RandomizedTokenAccount(2, 4, tokens=3).reactive(np.random.default_rng(s)) for s in range(400)]
    assert set(sends) == {1, 2} and np.mean(sends) == pytest.approx(1.5, abs=0.1)  # randRound(3 / 2)
    assert acct.reactive(rng) == 2 and acct.tokens == 2


def test_in_the_long_run_at_most_one_message_per_period() -> None:
    """Each message is a period's proactive push or a token earned in an earlier period."""
    rng = np.random.default_rng(1)
    acct = RandomizedTokenAccount(reactivity=10, capacity=20)
    sent = 0
    periods = 5000
    for _ in range(periods):
        sent += acct.proactive(rng)
        for _ in range(rng.poisson(1.0)):  # about one useful model arrives per period
            sent += acct.reactive(rng)
    assert sent <= periods and sent >= 0.95 * periods
    assert 0 <= acct.tokens <= 21


def test_parse_flow() -> None:
    assert isinstance(parse_flow("push"), PlainPush)
    acct = parse_flow("tokens:10,20")
    assert isinstance(acct, RandomizedTokenAccount) and (acct.reactivity, acct.capacity) == (10, 20)
    for bad in ("tokens", "tokens:3", "tokens:5,2", "tokens:0,2", "pull", "push:1"):
        with pytest.raises(ValueError):
            parse_flow(bad)


class _Draws:
    """A generator stand-in handing out fixed uniform draws, one at a time or as arrays."""

    def __init__(self, values: np.ndarray) -> None:
        self.values, self.at = values, 0

    def random(self, size: int | None = None) -> float | np.ndarray:
        n = 1 if size is None else size
        out = self.values[self.at: self.at + n]
        self.at += n
        return float(out[0]) if size is None else out


def test_the_batched_accounts_follow_the_node_accounts_rules_draw_for_draw() -> None:
    """TokenAccounts (the batched engine) against one RandomizedTokenAccount per node: with the
    same uniform draw for each node, the same pushes, forwards and balances at every step."""
    from gossipd.sim.batched_flow import TokenAccounts

    rng = np.random.default_rng(7)
    n = 12
    batched = TokenAccounts.of("tokens:3,8", n)
    assert batched is not None and TokenAccounts.of("push", n) is None
    nodes = [RandomizedTokenAccount(3, 8) for _ in range(n)]
    rows = np.arange(n)
    for step in range(300):
        u = rng.random(n)
        if step % 3:  # a period passes
            go = batched.proactive(rows, _Draws(u))
            # The node draws only where its probability is strictly between 0 and 1.
            expected = [acct.proactive(_Draws(u[i: i + 1])) for i, acct in enumerate(nodes)]
        else:  # a useful model arrives
            go = batched.reactive(rows, _Draws(u))
            expected = [acct.reactive(_Draws(u[i: i + 1])) for i, acct in enumerate(nodes)]
        assert list(go) == expected
        assert batched.tokens.tolist() == [acct.tokens for acct in nodes]
    assert batched.tokens.max() > 3  # the ramp was exercised

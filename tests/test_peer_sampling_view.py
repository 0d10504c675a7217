"""View invariants: bounded, never self, never duplicates, under any operation sequence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer_sampling import PeerDescriptor, View

SELF = "me"
NAMES = [SELF] + [f"p{i}" for i in range(12)]

address = st.sampled_from(NAMES)
age = st.integers(min_value=0, max_value=50)
op = st.one_of(
    st.tuples(st.just("add"), address, age),
    st.tuples(st.just("remove"), address),
    st.tuples(st.just("replace"), address, address, age),
    st.tuples(st.just("age")),
    st.tuples(st.just("sample"), st.integers(0, 15), st.lists(address, max_size=3)),
    st.tuples(st.just("oldest")),
    st.tuples(st.just("clear")),
)


def check(view: View, model: dict[str, int]) -> None:
    entries = list(view)
    addrs = [d.address for d in entries]
    assert len(view) == len(entries) <= view.capacity
    assert SELF not in addrs and SELF not in view
    assert len(set(addrs)) == len(addrs)
    assert {d.address: d.age for d in entries} == model
    assert view.addresses() == addrs
    for d in entries:
        assert d.address in view and view.age_of(d.address) == d.age
    assert view.free_slots == view.capacity - len(view)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(0, 8), ops=st.lists(op, max_size=60), seed=st.integers(0, 2**32 - 1))
def test_view_matches_model_and_keeps_invariants(capacity: int, ops: list[tuple], seed: int) -> None:
    rng = np.random.default_rng(seed)
    view = View(SELF, capacity)
    model: dict[str, int] = {}
    for o in ops:
        kind = o[0]
        if kind == "add":
            _, a, g = o
            expect = a != SELF and a not in model and len(model) < capacity
            assert view.add(PeerDescriptor(a, g)) is expect
            if expect:
                model[a] = g
        elif kind == "remove":
            assert view.remove(o[1]) is (o[1] in model)
            model.pop(o[1], None)
        elif kind == "replace":
            _, old, new, g = o
            expect = old in model and new != SELF and new not in model
            assert view.replace(old, PeerDescriptor(new, g)) is expect
            if expect:
                del model[old]
                model[new] = g
        elif kind == "age":
            view.increase_ages()
            model = {a: g + 1 for a, g in model.items()}
        elif kind == "sample":
            _, k, exclude = o
            got = view.sample(k, rng, exclude=exclude)
            allowed = {a for a in model if a not in exclude}
            assert len(got) == min(k, len(allowed))
            assert len({d.address for d in got}) == len(got)
            assert all(d.address in allowed and model[d.address] == d.age for d in got)
        elif kind == "oldest":
            old = view.oldest()
            if not model:
                assert old is None
            else:
                assert old is not None and old.age == max(model.values())
                first = next(d for d in view if d.age == old.age)
                assert old == first
        elif kind == "clear":
            view.clear()
            model.clear()
        check(view, model)
    # round trip through the checkpoint format
    again = View.from_list(SELF, capacity, view.to_list())
    assert list(again) == list(view)


def test_add_rules() -> None:
    v = View(SELF, 2)
    assert not v.add(PeerDescriptor(SELF, 0))
    assert v.add(PeerDescriptor("a", 3))
    assert not v.add(PeerDescriptor("a", 0))  # duplicate keeps the first
    assert v.age_of("a") == 3
    assert v.add(PeerDescriptor("b", 1))
    assert v.is_full and not v.add(PeerDescriptor("c", 0))
    assert PeerDescriptor("a", 99) in v and "c" not in v


def test_oldest_ties_pick_first_in_view_order() -> None:
    v = View(SELF, 5)
    for a, g in [("a", 1), ("b", 4), ("c", 4), ("d", 2)]:
        v.add(PeerDescriptor(a, g))
    assert v.oldest() == PeerDescriptor("b", 4)
    v.increase_ages()
    assert v.oldest() == PeerDescriptor("b", 5)


def test_sample_is_uniform_and_deterministic() -> None:
    v = View(SELF, 10)
    for i in range(10):
        v.add(PeerDescriptor(f"p{i}", i))
    counts = dict.fromkeys(v.addresses(), 0)
    rng = np.random.default_rng(7)
    for _ in range(4000):
        for d in v.sample(3, rng, exclude="p0"):
            counts[d.address] += 1
    assert counts["p0"] == 0
    others = [c for a, c in counts.items() if a != "p0"]
    # 12000 picks over 9 entries: ~1333 each
    assert min(others) > 1150 and max(others) < 1520
    a = [d.address for d in v.sample(5, np.random.default_rng(1))]
    b = [d.address for d in v.sample(5, np.random.default_rng(1))]
    assert a == b
    assert v.sample(0, rng) == [] and View(SELF, 3).sample(4, rng) == []
    assert sorted(d.address for d in v.sample(50, rng)) == sorted(v.addresses())


def test_random_address() -> None:
    rng = np.random.default_rng(0)
    v = View(SELF, 3)
    assert v.random_address(rng) is None
    v.add(PeerDescriptor("a"))
    v.add(PeerDescriptor("b"))
    seen = {v.random_address(rng) for _ in range(50)}
    assert seen == {"a", "b"}


def test_from_list_drops_self_duplicates_and_overflow() -> None:
    v = View.from_list(SELF, 2, [["a", 1], [SELF, 0], ["a", 5], ["b", 2], ["c", 3]])
    assert v.to_list() == [["a", 1], ["b", 2]]


@pytest.mark.parametrize(
    "entries",
    [[["a"]], [[1, 2]], [["", 0]], [["a", -1]], [["a", 1.5]], [["a", True]], ["ab"], [None]],
)
def test_from_list_rejects_malformed(entries: list) -> None:
    with pytest.raises(ValueError):
        View.from_list(SELF, 4, entries)


@pytest.mark.parametrize("capacity", [-1, 1.5, True])
def test_bad_capacity(capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        View(SELF, capacity)  # type: ignore[arg-type]

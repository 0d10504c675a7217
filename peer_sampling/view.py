"""The partial view: a bounded set of peer descriptors, never self, never twice.

The view sits on the hot path of the simulator (every shuffle and every gossip
peer choice touches it), so it keeps parallel ``list`` s of addresses and ages
plus a ``dict`` index instead of a list of frozen descriptors: membership,
add and remove are O(1), ageing is one list comprehension, and descriptors are
only materialised when someone asks for them.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Iterator

import numpy as np

from peer_sampling.messages import Address, PeerDescriptor

__all__ = ["Address", "PeerDescriptor", "View"]


class View:
    """At most ``capacity`` descriptors, without ``self_address`` or duplicates.

    Order is an implementation detail but deterministic: adds append, removal
    moves the last entry into the freed slot. Every random choice takes the
    caller's ``numpy.random.Generator`` so a seeded run is reproducible.
    """

    __slots__ = ("self_address", "capacity", "_addrs", "_ages", "_index")

    def __init__(self, self_address: Address, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"View capacity must be an integer >= 0, got {capacity!r}")
        self.self_address: Address = self_address
        self.capacity: int = capacity
        self._addrs: list[Address] = []
        self._ages: list[int] = []
        self._index: dict[Address, int] = {}

    # -- container protocol -------------------------------------------------

    def __len__(self) -> int:
        return len(self._addrs)

    def __contains__(self, address: object) -> bool:
        if isinstance(address, PeerDescriptor):
            address = address.address
        return address in self._index

    def __iter__(self) -> Iterator[PeerDescriptor]:
        return (PeerDescriptor(a, g) for a, g in zip(self._addrs, self._ages))

    def __repr__(self) -> str:
        body = ", ".join(f"{a}:{g}" for a, g in zip(self._addrs, self._ages))
        return f"View({self.self_address!r}, {len(self)}/{self.capacity}: [{body}])"

    @property
    def is_full(self) -> bool:
        return len(self._addrs) >= self.capacity

    @property
    def free_slots(self) -> int:
        return self.capacity - len(self._addrs)

    def addresses(self) -> list[Address]:
        """A copy of the addresses, in view order."""
        return list(self._addrs)

    def age_of(self, address: Address) -> int | None:
        i = self._index.get(address)
        return None if i is None else self._ages[i]

    # -- mutation -------------------------------------------------------------

    def add(self, desc: PeerDescriptor) -> bool:
        """Insert ``desc``; ignored (False) if it is self, already present, or the view is full."""
        address = desc.address
        if (
            address == self.self_address
            or address in self._index
            or len(self._addrs) >= self.capacity
        ):
            return False
        self._index[address] = len(self._addrs)
        self._addrs.append(address)
        self._ages.append(desc.age)
        return True

    def remove(self, address: Address) -> bool:
        """Drop ``address`` if present (True if it was). O(1): the last entry fills the hole."""
        i = self._index.pop(address, None)
        if i is None:
            return False
        last_addr = self._addrs.pop()
        last_age = self._ages.pop()
        if i < len(self._addrs):
            self._addrs[i] = last_addr
            self._ages[i] = last_age
            self._index[last_addr] = i
        return True

    def replace(self, old_address: Address, desc: PeerDescriptor) -> bool:
        """Put ``desc`` in the slot of ``old_address`` (False, no change, if that is absent
        or ``desc`` is self or already present). Used by Cyclon to swap a sent entry
        for a received one without ever exceeding the capacity."""
        new = desc.address
        if new == self.self_address or new in self._index:
            return False
        i = self._index.pop(old_address, None)
        if i is None:
            return False
        self._addrs[i] = new
        self._ages[i] = desc.age
        self._index[new] = i
        return True

    def clear(self) -> None:
        self._addrs.clear()
        self._ages.clear()
        self._index.clear()

    def increase_ages(self, by: int = 1, *, extra: int = 0, spared: Container[Address] = frozenset()) -> None:
        """Every entry gets ``by`` rounds older, and ``extra`` more unless its address
        is in ``spared`` (Cyclon does this once per shuffle; entries it could not
        vouch for age faster, so they are contacted, and dropped if dead, sooner)."""
        if extra == 0:
            self._ages = [g + by for g in self._ages]
        else:
            fast = by + extra
            self._ages = [g + (by if a in spared else fast) for a, g in zip(self._addrs, self._ages)]

    # -- queries --------------------------------------------------------------

    def oldest(self) -> PeerDescriptor | None:
        """The entry with the largest age; the first such in view order on ties."""
        ages = self._ages
        if not ages:
            return None
        i = ages.index(max(ages))
        return PeerDescriptor(self._addrs[i], ages[i])

    def random_address(self, rng: np.random.Generator) -> Address | None:
        """One address chosen uniformly, or None when empty."""
        n = len(self._addrs)
        if n == 0:
            return None
        return self._addrs[int(rng.random() * n)]

    def sample(
        self,
        k: int,
        rng: np.random.Generator,
        exclude: Address | Collection[Address] = (),
    ) -> list[PeerDescriptor]:
        """Up to ``k`` distinct entries chosen uniformly at random, in random order,
        skipping ``exclude`` (one address or a collection of them).

        A partial Fisher-Yates shuffle driven by a single ``rng.random(k)`` call:
        one numpy call per sample keeps this cheap for the small views we use.
        """
        addrs, ages = self._addrs, self._ages
        idx = list(range(len(addrs)))
        if isinstance(exclude, str):  # the common case (Cyclon's partner): O(1) via the index
            j = self._index.get(exclude)
            if j is not None:
                idx[j] = idx[-1]
                idx.pop()
        elif exclude:
            idx = [i for i, a in enumerate(addrs) if a not in exclude]
        m = len(idx)
        k = min(k, m)
        if k <= 0:
            return []
        r = rng.random(k)
        out: list[PeerDescriptor] = []
        for j in range(k):
            t = j + int(r[j] * (m - j))
            idx[j], idx[t] = idx[t], idx[j]
            i = idx[j]
            out.append(PeerDescriptor(addrs[i], ages[i]))
        return out

    # -- checkpointing ----------------------------------------------------------

    def to_list(self) -> list[list[Address | int]]:
        """``[[address, age], ...]``: plain values a checkpoint can store as JSON/msgpack."""
        return [[a, g] for a, g in zip(self._addrs, self._ages)]

    @classmethod
    def from_list(
        cls,
        self_address: Address,
        capacity: int,
        entries: Iterable[Iterable[object]],
    ) -> View:
        """Rebuild a view from :meth:`to_list` output.

        Malformed entries raise ValueError; self, duplicates and entries beyond
        ``capacity`` are dropped silently (the same rules as :meth:`add`), so a
        checkpoint taken with a larger view size still loads.
        """
        view = cls(self_address, capacity)
        for entry in entries:
            try:
                address, age = entry  # type: ignore[misc]
            except (TypeError, ValueError):
                raise ValueError(f"view entry must be [address, age], got {entry!r}") from None
            if not isinstance(address, str) or not address:
                raise ValueError(f"view entry address must be a non-empty string, got {address!r}")
            if isinstance(age, bool) or not isinstance(age, int) or age < 0:
                raise ValueError(f"view entry age must be an integer >= 0, got {age!r}")
            view.add(PeerDescriptor(address, age))
        return view

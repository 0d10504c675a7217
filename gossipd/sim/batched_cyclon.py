"""Peer sampling for the batched simulator: every node's Cyclon state in arrays,
and static overlays as one adjacency array.

:class:`BatchedCyclon` is ``peer_sampling.cyclon.Cyclon`` (read that first: the
protocol, its defences and why) for all nodes at once. Each method takes
``rows``, distinct node indices, and does for each of them what the per-node
method of the same name does; the batched engine guarantees distinct rows by
splitting a slice into sub-rounds. Addresses are node indices (-1: none).

Per node it keeps what Cyclon keeps: the view (addresses and ages, compacted:
a removal moves the last entry into the hole, as ``View`` does), the seeds,
the fallback book ``known``, the ``failed`` book, the ``vouched`` addresses
(whose entries age at the normal pace) and timeout strikes, each book a ring
of the same size as Cyclon's bound, oldest out first. Differences, all in
rare paths (``docs/architecture.md``, "The batched engine"):

- a book is a ring of slots: an address removed from it leaves a hole until
  the ring comes round, where a dict would shrink;
- a reply carries the entries its request sent, where Cyclon looks them up in
  its pending table (the same unless a second shuffle to the same partner
  overwrote the first one's, or a failed push to it cleared it meanwhile), and
  reseeding excludes the partner of a shuffle started in the same slice, not
  every unanswered one;
- one message's entries are placed in one pass against the view as it was
  before the message (a later entry equal to an earlier one's victim is not
  placed again).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from peer_sampling.cyclon import CyclonConfig
from peer_sampling.outcome import Outcome
from peer_sampling.topology import FullOverlay

#: Outcomes as small integers, and what each means (from ``Outcome`` itself).
OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)
CODE = {o: i for i, o in enumerate(OUTCOMES)}
ALIVE = np.array([o.alive for o in OUTCOMES])
FATAL = np.array([o.fatal for o in OUTCOMES])
STRIKE = np.array([o.strike for o in OUTCOMES])
FAILED = np.array([o.failed for o in OUTCOMES])
BUSY = CODE[Outcome.BUSY]
#: Outcomes on which ``on_outcome`` only vouches for the peer (the books: never the view or
#: ``known``, which a busy answer may touch): the engine orders those apart from the replies.
VOUCH_ONLY = ALIVE & (np.arange(len(OUTCOMES)) != BUSY)


@dataclass
class Requests:
    """Shuffle requests: from ``src`` to ``target`` at ``now``, carrying ``entries``
    (addresses and ages, the first ``n_entries`` of each row) and remembering which of
    them came from the view (``sent``, the first ``n_sent``)."""

    src: np.ndarray
    target: np.ndarray
    now: np.ndarray
    entries: np.ndarray
    ages: np.ndarray
    n_entries: np.ndarray
    sent: np.ndarray
    n_sent: np.ndarray


class RingBook:
    """Per node, a bounded set of addresses, oldest out first: Cyclon's ``known``,
    ``failed``, ``vouched`` (dicts used as ordered sets). ``cap`` 0 keeps nothing."""

    def __init__(self, n: int, cap: int) -> None:
        self.cap = cap
        self.slots = np.full((n, cap), -1, dtype=np.int32)
        self.pos = np.zeros(n, dtype=np.int64)
        #: Rows that have ever held an address: removing from the others is a no-op, and the
        #: ``failed`` and ``strikes`` books stay empty for most nodes of a healthy run.
        self.used = np.zeros(n, dtype=bool)

    def contains(self, rows: np.ndarray, addrs: np.ndarray) -> np.ndarray:
        """``addrs`` ``(m,)`` or ``(m, k)``: is each in its row's book?"""
        if self.cap == 0:
            return np.zeros(addrs.shape, dtype=bool)
        book = self.slots[rows]
        if addrs.ndim == 1:
            return (book == addrs[:, None]).any(axis=1)
        return (addrs[:, :, None] == book[:, None, :]).any(axis=2)

    def add(self, rows: np.ndarray, addrs: np.ndarray, new: np.ndarray | None = None) -> None:
        """Add ``addrs`` (``(m,)``, or ``(m, k)`` in order, where ``new``) not yet in the book."""
        if self.cap == 0 or rows.size == 0:
            return
        if addrs.ndim == 1:
            fresh = ~self.contains(rows, addrs) & (addrs >= 0)
            r = rows[fresh]
            self.slots[r, self.pos[r] % self.cap] = addrs[fresh]
            self.pos[r] += 1
            self.used[r] = True
            return
        assert new is not None
        upto = np.cumsum(new, axis=1)
        ri, ci = np.nonzero(new)
        r = rows[ri]
        self.slots[r, (self.pos[r] + upto[ri, ci] - 1) % self.cap] = addrs[ri, ci]
        self.pos[rows] += upto[:, -1]
        self.used[r] = True

    def remove(self, rows: np.ndarray, addrs: np.ndarray) -> None:
        if self.cap == 0 or rows.size == 0:
            return
        used = self.used[rows]
        if not used.all():
            if not used.any():
                return
            rows, addrs = rows[used], addrs[used]
        ri, ci = np.nonzero(self.slots[rows] == addrs[:, None])
        if ri.size:
            self.slots[rows[ri], ci] = -1

    def in_order(self, row: int) -> list[int]:
        """Row ``row``'s addresses, oldest first."""
        if self.cap == 0:
            return []
        if not self.used[row]:
            return []
        at = int(self.pos[row] % self.cap)
        ring = np.concatenate([self.slots[row, at:], self.slots[row, :at]])
        return ring[ring >= 0].tolist()

    def set_row(self, row: int, addrs: list[int]) -> None:
        """Make row ``row`` hold ``addrs`` (oldest first, at most ``cap``)."""
        if self.cap == 0:
            return
        addrs = addrs[-self.cap:]
        self.slots[row] = -1
        self.slots[row, : len(addrs)] = addrs
        self.pos[row] = len(addrs)
        self.used[row] |= len(addrs) > 0


class BatchedCyclon:
    """Cyclon for ``n`` nodes (addresses ``0..n-1``); the first ``seeds`` nodes are the seeds."""

    shuffles = True
    #: Fewer nodes than this in a sub-round of requests: Cyclon's own steps, node by node, are cheaper.
    min_batch = 4

    def __init__(self, n: int, seeds: int, config: CyclonConfig, rng: np.random.Generator) -> None:
        self.n = n
        self.config = config
        self.c = config.view_size
        self.length = config.shuffle_length
        self.max_from_one = config.max_from_one
        self.view = np.full((n, self.c), -1, dtype=np.int32)
        self.vage = np.zeros((n, self.c), dtype=np.int64)
        self.vlen = np.zeros(n, dtype=np.int64)
        self.seeds = np.arange(min(seeds, n), dtype=np.int32)
        memory = max(2 * self.c, self.c + config.fallback_size)
        self.known = RingBook(n, config.fallback_size)
        self.failed = RingBook(n, config.fallback_size)
        self.vouched = RingBook(n, memory)
        self.strikes = RingBook(n, memory)
        self.strike_count = np.zeros((n, memory), dtype=np.int64)
        self.next_shuffle = rng.random(n) * config.interval
        reseed = config.effective_reseed_interval
        self.next_reseed = rng.random(n) * reseed if math.isfinite(reseed) else np.full(n, math.inf)

    # -- the PeerSampler side -------------------------------------------------------

    def select_peer(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniform view entry per row (-1 for an empty view)."""
        size = self.vlen[rows]
        pick = (rng.random(len(rows)) * size).astype(np.int64)
        peers = self.view[rows, np.minimum(pick, self.c - 1)].astype(np.int64)
        return np.where(size > 0, peers, -1)

    def edges(self, holders: np.ndarray) -> np.ndarray:
        """``(holder, target)`` for every view entry of ``holders``."""
        view = self.view[holders]
        hi, ci = np.nonzero(view >= 0)
        return np.stack([holders[hi], view[hi, ci].astype(np.int64)], axis=1)

    def _period(self, base: float, m: int, rng: np.random.Generator) -> np.ndarray:
        j = self.config.jitter
        if not math.isfinite(base):
            return np.full(m, math.inf)
        if j == 0:
            return np.full(m, base)
        return base * (1.0 + j * (2.0 * rng.random(m) - 1.0))

    # -- timers ----------------------------------------------------------------------

    def tick_shuffle(self, rows: np.ndarray, now: np.ndarray, rng: np.random.Generator) -> Requests:
        """``on_tick``'s shuffle: age the view (unvouched entries faster), contact the
        oldest entry (removed from the view) with a sample; an empty view bootstraps."""
        self.next_shuffle[rows] = now + self._period(self.config.interval, len(rows), rng)
        view = self.view[rows]
        valid = view >= 0  # slots past the view's length hold -1
        step = self.config.unvouched_age_step
        ages = self.vage[rows]
        if step > 1:
            fast = ~self.vouched.contains(rows, view)
            ages += np.where(valid, 1 + (step - 1) * fast, 0)
        else:
            ages += valid
        self.vage[rows] = ages
        empty = ~valid[:, 0]
        some_empty = bool(empty.any())
        normal, at = (rows[~empty], now[~empty]) if some_empty else (rows, now)
        if some_empty:
            view, valid, ages = view[~empty], valid[~empty], ages[~empty]
        oldest = np.argmax(np.where(valid, ages, -1), axis=1)  # the first of equals, as View.oldest
        target = view[np.arange(len(normal)), oldest].astype(np.int64)
        self._remove_slots(normal, oldest)
        req = self._request(normal, target, at, rng)
        if not some_empty:  # the usual case: a bootstrap of no rows would still cost ~30 numpy calls
            return req
        return _concat_requests([req, self._bootstrap(rows[empty], now[empty], rng)])

    def tick_reseed(self, rows: np.ndarray, now: np.ndarray, exclude: np.ndarray,
                    rng: np.random.Generator) -> Requests:
        """``on_tick``'s reseed: shuffle with a seed or a book address outside the view
        (a seed half of the time when there are both; a failed one only when nothing else)."""
        self.next_reseed[rows] = now + self._period(self.config.effective_reseed_interval, len(rows), rng)
        view = self.view[rows]
        me = rows[:, None]
        seeds = np.broadcast_to(self.seeds, (len(rows), len(self.seeds)))
        ok_seed = (seeds != me) & ~_in(seeds, view) & (seeds != exclude[:, None])
        book = self.known.slots[rows]
        ok_book = (book >= 0) & ~_in(book, view) & (book != exclude[:, None]) & ~_in(book, self.seeds)
        has_seed, has_book = ok_seed.any(axis=1), ok_book.any(axis=1)
        use_seed = np.where(has_seed & has_book, rng.random(len(rows)) < 0.5, has_seed)
        use_book = ~use_seed & has_book
        target = np.full(len(rows), -1, dtype=np.int64)
        for chosen, pool, ok in ((use_seed, seeds, ok_seed), (use_book, book, ok_book)):
            if chosen.any():
                target[chosen] = _uniform_pick(pool[chosen], ok[chosen], rng)
        last = ~use_seed & ~use_book
        if last.any():  # the failed book, only for the rows with nothing else (rare: worth not testing all)
            failed, v = self.failed.slots[rows[last]], view[last]
            ok_failed = (failed >= 0) & ~_in(failed, v) & (failed != exclude[last, None])
            target[last] = _uniform_pick(failed, ok_failed, rng)
        has = target >= 0
        return self._request(rows[has], target[has], now[has], rng)

    def _request(self, rows: np.ndarray, target: np.ndarray, now: np.ndarray,
                 rng: np.random.Generator) -> Requests:
        """A fresh self-descriptor and ℓ-1 random entries other than the target."""
        sample, ages, count = self._sample(rows, self.length - 1, target, rng)
        m = len(rows)
        entries = np.concatenate([rows[:, None].astype(np.int32), sample], axis=1)
        eages = np.concatenate([np.zeros((m, 1), dtype=np.int64), ages], axis=1)
        return Requests(rows, target, now, entries, eages, count + 1, sample, count)

    def _bootstrap(self, rows: np.ndarray, now: np.ndarray, rng: np.random.Generator) -> Requests:
        """Empty view: ask a random seed or book address (failed ones only when there is
        nothing else), telling it about up to ℓ-1 of the other seeds."""
        m = len(rows)
        me = rows[:, None]
        seeds = np.broadcast_to(self.seeds, (m, len(self.seeds)))
        book = self.known.slots[rows]
        cand = np.concatenate([seeds, book], axis=1)
        ok = np.concatenate([seeds != me, (book >= 0) & ~_in(book, self.seeds)], axis=1)
        none = ~ok.any(axis=1)
        if none.any():  # only the failed book is left
            failed = self.failed.slots[rows]
            width = max(cand.shape[1], failed.shape[1])
            cand = _pad(cand, width)
            ok = _pad(ok, width, False)
            cand[none] = _pad(failed[none], width)
            ok[none] = _pad(failed[none] >= 0, width, False)
        target = _uniform_pick(cand, ok, rng)
        has = target >= 0
        rows, target, now, seeds, me = rows[has], target[has], now[has], seeds[has], me[has]
        others = (seeds != target[:, None]) & (seeds != me)
        picks, count, _ = _random_subset(seeds, others, self.length - 1, rng)
        entries = _pad(np.concatenate([rows[:, None].astype(np.int32), picks], axis=1), self.length)
        eages = np.zeros(entries.shape, dtype=np.int64)
        nothing = np.full((len(rows), self.length - 1), -1, dtype=np.int32)  # no pending entries to overwrite
        return Requests(rows, target, now, entries, eages, count + 1, nothing, np.zeros(len(rows), np.int64))

    # -- messages ------------------------------------------------------------------

    def on_request(self, rows: np.ndarray, sender: np.ndarray, entries: np.ndarray, ages: np.ndarray,
                   n_entries: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Answer with up to ℓ random entries (never the requester), then take in the
        request's entries, overwriting those just sent back. Returns the reply."""
        self.failed.remove(rows, sender)
        reply, reply_ages, count = self._sample(rows, self.length, sender, rng)
        self._integrate(rows, entries, ages, n_entries, reply, count)
        return reply, reply_ages, count

    def on_reply(self, rows: np.ndarray, partner: np.ndarray, entries: np.ndarray, ages: np.ndarray,
                 n_entries: np.ndarray, sent: np.ndarray, n_sent: np.ndarray) -> None:
        """Take in the partner's entries (free slots first, then over what we sent it),
        vouch for it, and keep it while a slot is free."""
        self.take_reply(rows, partner, entries, ages, n_entries, sent, n_sent)
        # Cyclon vouches before it keeps the partner; the view and the books are apart, so after is the same.
        self.vouch(rows, partner)

    def take_reply(self, rows: np.ndarray, partner: np.ndarray, entries: np.ndarray, ages: np.ndarray,
                   n_entries: np.ndarray, sent: np.ndarray, n_sent: np.ndarray) -> None:
        """:meth:`on_reply` on the view and the ``known`` book only (no vouching): what the
        engine runs in the replies' own sub-rounds when the vouching runs in its own."""
        placed = self.max_from_one - self._integrate(rows, entries, ages, n_entries, sent, n_sent)
        keep = (placed < self.c - 1) & (self.vlen[rows] < self.c) & (partner != rows)
        keep &= ~(self.view[rows] == partner[:, None]).any(axis=1)
        self._append(rows[keep], partner[keep], np.zeros(int(keep.sum()), dtype=np.int64))

    def on_outcome(self, rows: np.ndarray, peer: np.ndarray, code: np.ndarray) -> None:
        """Answered: vouched for. Refused or unreachable: out of the view and the book, into
        ``failed``. Timeouts: the same after ``max_timeouts`` in a row."""
        alive = ALIVE[code]
        busy = code == BUSY  # the simulator has no busy peers; kept to mirror Cyclon.on_outcome
        if busy.any():
            r, p = rows[busy], peer[busy]
            out = (_find(self.view[r], p) < 0) & (p != r)
            self.known.add(r[out], p[out].astype(np.int32))
        if alive.all():  # acknowledgements and answers: the usual case
            self.vouch(rows, peer)
            return
        self.vouch(rows[alive], peer[alive])
        fail = ~alive
        strike = STRIKE[code] & fail
        drop = fail & ~strike
        if strike.any():
            r, p = rows[strike], peer[strike]
            count = self._strike(r, p)
            out = count >= self.config.max_timeouts
            drop[np.flatnonzero(strike)[out]] = True
        if drop.any():
            r, p = rows[drop], peer[drop]
            self.strikes.remove(r, p)
            slot = _find(self.view[r], p)
            there = slot >= 0
            self._remove_slots(r[there], slot[there])
            self.known.remove(r, p)
            self.vouched.remove(r, p)
            keep = ~np.isin(p, self.seeds) & (p != r)
            self.failed.add(r[keep], p[keep].astype(np.int32))

    def on_requests_one_by_one(self, row: int, senders: np.ndarray, entries: np.ndarray, ages: np.ndarray,
                               n_entries: np.ndarray, now: float,
                               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`on_request` for many requests to ONE node, in order: for a node that hears
        more requests in a slice than is worth a vectorised step each (the seeds).

        The reference ``Cyclon.on_request`` step for step (``View.sample``'s partial
        Fisher-Yates with one ``rng.random(k)`` per request, ``Cyclon._integrate``'s loop,
        the books as insertion-ordered dicts), on plain lists of ints rather than through a
        ``Cyclon`` built from strings for every call, which cost ~10x more; the
        ``on_requests_one_by_one`` test holds it to the reference. The books are written back
        compacted (holes dropped), as the reference's dicts would hold them."""
        c, length, cap, budget0 = self.c, self.length, self.known.cap, self.max_from_one
        size = int(self.vlen[row])
        addrs: list[int] = self.view[row, :size].tolist()
        vages: list[int] = self.vage[row, :size].tolist()
        index = {a: i for i, a in enumerate(addrs)}
        known = dict.fromkeys(self.known.in_order(row))
        failed = dict.fromkeys(self.failed.in_order(row))
        # The two timer draws of the Cyclon this path used to build per call: runs stay the same draw for draw.
        rng.random()
        if math.isfinite(self.config.effective_reseed_interval):
            rng.random()
        k = len(senders)
        reply = np.full((k, length), -1, dtype=np.int32)
        reply_ages = np.zeros((k, length), dtype=np.int64)
        count = np.zeros(k, dtype=np.int64)
        senders_l, entries_l, ages_l, n_l = senders.tolist(), entries.tolist(), ages.tolist(), n_entries.tolist()
        for i in range(k):
            sender = senders_l[i]
            failed.pop(sender, None)
            # View.sample(length, rng, exclude=sender)
            idx = list(range(len(addrs)))
            j = index.get(sender)
            if j is not None:
                idx[j] = idx[-1]
                idx.pop()
            m = len(idx)
            want = min(length, m)
            if want > 0:
                r = rng.random(want)
                for jj in range(want):
                    t = jj + int(r[jj] * (m - jj))
                    idx[jj], idx[t] = idx[t], idx[jj]
            sent = [addrs[s] for s in idx[:want]]
            count[i] = want
            reply[i, :want] = sent
            reply_ages[i, :want] = [vages[s] for s in idx[:want]]
            if sender == row:
                continue
            # Cyclon._integrate(request entries, sent)
            budget, js, overwrite = budget0, 0, True
            for a, g in zip(entries_l[i][: n_l[i]], ages_l[i][: n_l[i]]):
                if a == row:
                    continue
                if cap and a not in known:
                    known[a] = None
                    if len(known) > cap:
                        del known[next(iter(known))]
                if not overwrite or a in index:
                    continue
                if len(addrs) < c:
                    index[a] = len(addrs)
                    addrs.append(a)
                    vages.append(g)
                    budget -= 1
                else:
                    while js < want:
                        at = index.pop(sent[js], None)
                        js += 1
                        if at is not None:
                            addrs[at], vages[at] = a, g
                            index[a] = at
                            budget -= 1
                            break
                    else:
                        overwrite = False  # full and nothing left to overwrite
                if budget == 0:
                    break
        self.view[row] = -1
        self.vage[row] = 0
        self.view[row, : len(addrs)] = addrs
        self.vage[row, : len(addrs)] = vages
        self.vlen[row] = len(addrs)
        self.known.set_row(row, list(known))
        self.failed.set_row(row, list(failed))
        return reply, reply_ages, count

    # -- internals -----------------------------------------------------------------------

    def vouch(self, rows: np.ndarray, addrs: np.ndarray) -> None:
        """``addrs`` answered a request of ``rows`` (strikes and ``failed`` forgotten, vouched for):
        all an acknowledgement does, and a reply's part on the books."""
        self.strikes.remove(rows, addrs)
        self.failed.remove(rows, addrs)
        self.vouched.add(rows, addrs.astype(np.int32))

    def _strike(self, rows: np.ndarray, addrs: np.ndarray) -> np.ndarray:
        """One more timeout in a row against ``addrs``; the count so far."""
        book = self.strikes.slots[rows]
        hit = book == addrs[:, None]
        there = hit.any(axis=1)
        slot = np.argmax(hit, axis=1)
        count = np.ones(len(rows), dtype=np.int64)
        r = rows[there]
        self.strike_count[r, slot[there]] += 1
        count[there] = self.strike_count[r, slot[there]]
        fresh = rows[~there]
        if fresh.size:
            at = self.strikes.pos[fresh] % self.strikes.cap
            self.strikes.slots[fresh, at] = addrs[~there]
            self.strike_count[fresh, at] = 1
            self.strikes.pos[fresh] += 1
            self.strikes.used[fresh] = True
        return count

    def _sample(self, rows: np.ndarray, k: int, exclude: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``k`` distinct random view entries per row, in random order, never ``exclude``:
        addresses ``(m, k)`` (-1 past the count), their ages, and the count."""
        view = self.view[rows]
        ok = (view >= 0) & (view != exclude[:, None])  # slots past the view's length hold -1
        picks, count, slots = _random_subset(view, ok, k, rng)
        ages = self.vage[rows[:, None], slots]
        return picks, np.where(picks >= 0, ages, 0), count

    def _integrate(self, rows: np.ndarray, entries: np.ndarray, ages: np.ndarray, n_entries: np.ndarray,
                   sent: np.ndarray, n_sent: np.ndarray) -> np.ndarray:
        """Cyclon's merge of received entries: skip self and entries already in the view, fill
        free slots, then overwrite the entries we sent (in the order sent), at most
        ``max_from_one`` placements; every address looked at (up to the last placement, if
        the budget ran out) is noted in the book. Returns the budget left per row."""
        width = entries.shape[1]
        mfo = self.max_from_one
        view = self.view[rows]
        vlen = self.vlen[rows]
        free = self.c - vlen
        looked = (np.arange(width) < n_entries[:, None]) & (entries != rows[:, None])
        # received and sent entries against the view in one comparison
        hit = np.concatenate([entries, sent], axis=1)[:, :, None] == view[:, None, :]
        in_view = hit.any(axis=2)
        cand = looked & ~in_view[:, :width]
        sent_hit = hit[:, width:]
        sent_in = (np.arange(sent.shape[1]) < n_sent[:, None]) & in_view[:, width:]
        room = np.minimum(free + sent_in.sum(axis=1), mfo)
        upto = np.cumsum(cand, axis=1)  # candidates so far, this one included
        place = cand & (upto <= room[:, None])
        placed = np.minimum(upto[:, -1], room)
        out = placed == mfo
        if out.any():
            # The budget ran out at the last placement (the mfo-th candidate): nothing after it is looked at.
            looked &= ~(out[:, None] & (upto - cand >= mfo))
        if self.known.cap:
            self.known.add(rows, entries, looked & ~self.known.contains(rows, entries))
        ri, ci = np.nonzero(place)
        if ri.size:
            u, f = upto[ri, ci], free[ri]
            slot = vlen[ri] + u - 1  # the first ones fill the free slots
            over = u > f
            if over.any():
                # the j-th entry over a sent one takes the slot of the j-th sent entry still in the view
                order = np.argsort(~sent_in, axis=1, kind="stable")
                oi = ri[over]
                slot[over] = np.argmax(sent_hit[oi, order[oi, u[over] - 1 - f[over]]], axis=1)
            r = rows[ri]
            self.view[r, slot] = entries[ri, ci]
            self.vage[r, slot] = ages[ri, ci]
        self.vlen[rows] = vlen + np.minimum(placed, free)
        return mfo - placed

    def _append(self, rows: np.ndarray, addrs: np.ndarray, ages: np.ndarray) -> None:
        slot = self.vlen[rows]
        self.view[rows, slot] = addrs
        self.vage[rows, slot] = ages
        self.vlen[rows] += 1

    def _remove_slots(self, rows: np.ndarray, slots: np.ndarray) -> None:
        """Remove one entry per row; the last entry moves into the hole (``View.remove``)."""
        last = self.vlen[rows] - 1
        self.view[rows, slots] = self.view[rows, last]
        self.vage[rows, slots] = self.vage[rows, last]
        self.view[rows, last] = -1
        self.vage[rows, last] = 0
        self.vlen[rows] = last


class StaticPeers:
    """A fixed overlay (full, ring, k-regular, small world, random) as one adjacency array;
    like ``StaticSampler`` it never shuffles and ignores outcomes."""

    shuffles = False

    def __init__(self, overlay: Mapping[str, Sequence[str]], index: Mapping[str, int]) -> None:
        self.n = len(index)
        self.full = isinstance(overlay, FullOverlay)
        if self.full:
            return
        neighbours = [[index[a] for a in overlay[f"n{i}"]] for i in range(self.n)]
        degree = np.array([len(nb) for nb in neighbours], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(degree)])
        self.degree = degree
        self.targets = np.array([a for nb in neighbours for a in nb], dtype=np.int64)

    def select_peer(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(len(rows))
        if self.full:
            pick = (u * (self.n - 1)).astype(np.int64)
            return pick + (pick >= rows)
        degree = self.degree[rows]
        pick = self.start[rows] + (u * degree).astype(np.int64)
        return np.where(degree > 0, self.targets[np.minimum(pick, len(self.targets) - 1)], -1)

    def edges(self, holders: np.ndarray) -> np.ndarray | None:
        if self.full:
            return None
        degree = self.degree[holders]
        owner = np.repeat(holders, degree)
        starts = np.repeat(self.start[holders], degree)
        offset = np.arange(len(owner)) - np.repeat(np.concatenate([[0], np.cumsum(degree)[:-1]]), degree)
        return np.stack([owner, self.targets[starts + offset]], axis=1)


# -- helpers over rows ------------------------------------------------------------------


def _in(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """``values`` ``(m, k)`` against ``pool`` ``(m, j)`` per row, or ``(j,)`` for all rows."""
    if pool.ndim == 1:
        return (values[..., None] == pool).any(axis=-1)
    return (values[:, :, None] == pool[:, None, :]).any(axis=2)


def _find(table: np.ndarray, addrs: np.ndarray) -> np.ndarray:
    """The column of ``addrs[i]`` in row i of ``table``, -1 if absent."""
    hit = table == addrs[:, None]
    return np.where(hit.any(axis=1), np.argmax(hit, axis=1), -1)


def _uniform_pick(pool: np.ndarray, ok: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly chosen ``pool`` entry among the ``ok`` ones per row; -1 if none."""
    if pool.shape[1] == 0:
        return np.full(pool.shape[0], -1, dtype=np.int64)
    keys = np.where(ok, rng.random(pool.shape), -1.0)
    col = np.argmax(keys, axis=1)
    return np.where(ok.any(axis=1), pool[np.arange(pool.shape[0]), col], -1).astype(np.int64)


def _random_subset(pool: np.ndarray, ok: np.ndarray, k: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``k`` distinct ``ok`` entries of each row, in random order (-1 past the count):
    the entries, their count and their columns."""
    m, width = pool.shape
    k = min(k, width)
    keys = np.where(ok, rng.random((m, width)), 2.0)
    slots = np.argsort(keys, axis=1)[:, :k]
    count = np.minimum(ok.sum(axis=1), k)
    picks = pool[np.arange(m)[:, None], slots].astype(np.int32)
    picks[np.arange(k) >= count[:, None]] = -1
    return picks, count, slots


def _pad(a: np.ndarray, width: int, fill: object = -1) -> np.ndarray:
    if a.shape[1] >= width:
        return a.copy()
    return np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), fill, dtype=a.dtype)], axis=1)


def _concat_requests(parts: list[Requests]) -> Requests:
    parts = [p for p in parts if len(p.src)]
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Requests(empty, empty, np.zeros(0), np.zeros((0, 1), np.int32), np.zeros((0, 1), np.int64),
                        empty, np.zeros((0, 0), np.int32), empty)
    if len(parts) == 1:
        return parts[0]
    width = max(p.entries.shape[1] for p in parts)
    swidth = max(p.sent.shape[1] for p in parts)
    return Requests(
        np.concatenate([p.src for p in parts]), np.concatenate([p.target for p in parts]),
        np.concatenate([p.now for p in parts]),
        np.concatenate([_pad(p.entries, width) for p in parts]),
        np.concatenate([_pad(p.ages, width, 0) for p in parts]),
        np.concatenate([p.n_entries for p in parts]),
        np.concatenate([_pad(p.sent, swidth) for p in parts]),
        np.concatenate([p.n_sent for p in parts]))

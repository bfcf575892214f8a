"""Tables per level of many rows' boot-time trees, in one compiled loop over the rows.

A boot set's row is a handful of page ranges (``sweep.model.bootrows``) plus chunk spans every
row of a kind shares. Counted with numpy, each range and level is a dozen passes over the rows;
here each row's ranges are sorted in registers and counted in one pass (63 ns a row), so a
stride sweep of boot sets runs at 0.82x the rows/s of all of DRAM on the same maps
(``bench/bench_driver.py --only boot``). The rule is ``bootmap.count_tables``' (section 5): a table
at level ``l + 1`` for each distinct ``2^shift(l)`` chunk that a range with leaves below ``l``
touches; ``shared_tables`` is ``T(idmap) + T(rest) - T(all)``.
"""

from __future__ import annotations

import numba
import numpy as np

from sweep.core.kconfig import level_shift
from sweep.model.bootmap import NAMES

I64 = np.int64


def fixed_spans(kinds: list[list], levels: range, granule: int) -> tuple[np.ndarray, np.ndarray]:
    """The chunks of each kind's fixed ranges ``(start, end, leaf)`` at each of ``levels``, as
    sorted, disjoint, inclusive spans: ``(spans, counts)``, spans ``(kinds, levels, most, 2)``."""
    per = [
        [_merged(fixed, level_shift(level, granule), level) for level in levels] for fixed in kinds
    ]
    most = max((len(x) for row in per for x in row), default=0)
    spans = np.zeros((len(per), len(levels), max(most, 1), 2), I64)
    counts = np.zeros((len(per), len(levels)), I64)
    for k, row in enumerate(per):
        for j, merged in enumerate(row):
            counts[k, j] = len(merged)
            if merged:
                spans[k, j, : len(merged)] = merged
    return spans, counts


def _merged(fixed: list, shift: int, level: int) -> list[list[int]]:
    """The ``2^shift`` chunks of the ``fixed`` ranges with leaves below ``level``, merged."""
    chunks = sorted(
        (a >> shift, (b - 1) >> shift) for a, b, leaf in fixed if leaf > level and b > a
    )
    out: list[list[int]] = []
    for a, b in chunks:
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def count_rows(anchors: list, ranges: list[tuple[int, int, int, int]], fixed: list[list],
               kind, granule: int, n_levels: int, n: int) -> dict[str, np.ndarray]:  # fmt: skip
    """Tables per level, ``table_pages`` and ``shared_tables`` of ``n`` rows, each with page
    ranges ``[anchors[i] + a, anchors[j] + b)`` for ``(i, a, j, b)`` in ``ranges`` (uint64,
    wrapping; range 0 the idmap, an empty range is no range) and the fixed ranges
    ``(start, end, leaf)`` of its ``kind`` (an index into ``fixed``, per row or one)."""
    levels = range(4 - n_levels, 3)
    spans, counts = fixed_spans(fixed, levels, granule)
    shifts = np.array([level_shift(level, granule) for level in levels], np.uint64)
    at = np.stack(
        [np.broadcast_to(np.asarray(x).astype(np.uint64, copy=False), (n,)) for x in anchors]
    )
    how = np.array([[i, a % (1 << 64), j, b % (1 << 64)] for i, a, j, b in ranges], np.uint64)
    kind = np.require(np.broadcast_to(np.asarray(kind, I64), (n,)), I64, ["C", "W"])
    out = np.zeros((len(NAMES) + 2, n), I64)
    _count(at, how, kind, shifts, spans, counts, out, 4 - n_levels + 1)
    return dict(zip((*NAMES, "table_pages", "shared_tables"), out, strict=True))


@numba.njit(
    "void(u8[:, ::1], u8[:, ::1], i8[::1], u8[::1], i8[:, :, :, ::1], i8[:, ::1], i8[:, ::1], i8)",
    cache=True,
    nogil=True,
)
def _count(at, how, kind, shifts, spans, counts, out, root):  # pragma: no cover - compiled
    """Per row: its non-empty ranges sorted by start (``ip``: where the idmap went); per level,
    the chunks each adds past the running maximum, less those of its kind's fixed spans (one
    walk, both sorted), plus those spans; whether the idmap's first and last chunks are another
    range's (those before it in order start no later; those after, no earlier) or a span's."""
    n_ranges, n = how.shape[0], at.shape[1]
    lo = np.empty(n_ranges, np.uint64)
    hi = np.empty(n_ranges, np.uint64)
    which = np.empty(n_ranges, np.int64)
    for row in range(n):
        m = 0
        for k in range(n_ranges):
            a = at[how[k, 0], row] + how[k, 1]
            b = at[how[k, 2], row] + how[k, 3]
            if b <= a:
                continue
            j = m  # insertion by start
            while j > 0 and lo[j - 1] > a:
                lo[j], hi[j], which[j] = lo[j - 1], hi[j - 1], which[j - 1]
                j -= 1
            lo[j], hi[j], which[j] = a, b - np.uint64(1), k
            m += 1
        ip = 0
        while which[ip] != 0:
            ip += 1
        c = kind[row]
        pages, shared = np.int64(1), np.int64(1)  # the root
        for level in range(shifts.shape[0]):
            s, count = shifts[level], counts[c, level]
            c0, c1 = np.int64(lo[ip] >> s), np.int64(hi[ip] >> s)
            total, seen, p = 0, -1, 0
            hit0, hit1 = False, False
            for f in range(count):
                a, b = spans[c, level, f, 0], spans[c, level, f, 1]
                total += b - a + 1
                hit0 |= (a <= c0) & (c0 <= b)
                hit1 |= (a <= c1) & (c1 <= b)
            for k in range(m):
                first, last = np.int64(lo[k] >> s), np.int64(hi[k] >> s)
                if k < ip:
                    hit0 |= last >= c0
                    hit1 |= last >= c1
                elif k > ip and first <= c1:
                    hit0 |= first == c0
                    hit1 |= last >= c1
                begin = max(first, seen + 1)
                if last >= begin:
                    total += last - begin + 1
                    while p < count and spans[c, level, p, 1] < begin:
                        p += 1
                    q = p  # chunks the fixed set has already
                    while q < count and spans[c, level, q, 0] <= last:
                        total -= (
                            min(last, spans[c, level, q, 1]) - max(begin, spans[c, level, q, 0]) + 1
                        )
                        q += 1
                    seen = last
            out[root + level + 1, row] = total
            pages += total
            shared += np.int64(hit0) + np.int64(hit1 & (c1 != c0))
        out[root, row] = 1
        out[out.shape[0] - 2, row] = pages
        out[out.shape[0] - 1, row] = shared
